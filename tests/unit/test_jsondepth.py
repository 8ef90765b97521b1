"""The nesting check every service runs on params before touching state."""

from __future__ import annotations

import pytest

from exchange_server.common.errors import RpcError
from exchange_server.common.jsondepth import MAX_JSON_DEPTH, check_params_depth, json_depth


def nested(depth: int) -> object:
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def test_depth_counts_containers() -> None:
    assert json_depth(1) == 0
    assert json_depth([]) == 1
    assert json_depth({"a": [1]}) == 2
    assert json_depth(nested(5000)) == 5000  # no recursion


def test_limit_is_inclusive() -> None:
    check_params_depth([nested(MAX_JSON_DEPTH)])
    with pytest.raises(RpcError) as info:
        check_params_depth([1, "x", nested(MAX_JSON_DEPTH + 1)])
    assert info.value.code == 1
    assert "nested deeper than 32" in info.value.message
