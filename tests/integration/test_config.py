"""Config files in the original's format: defaults, and errors that name the field."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exchange_server.common.config import ConfigError, default_matchengine_data, load_matchengine, read_json
from tests.support.server import REPO, SHARED


def test_default_config_is_the_original_sample() -> None:
    config = load_matchengine(default_matchengine_data(), embedded=True)
    assert [a.name for a in config.assets] == ["BCH", "BTC", "LTC", "ETH", "ETC", "ZEC", "XMR", "DSH"]
    assert [m.name for m in config.markets] == ["BTCBCH", "LTCBCH", "ETHBCH", "ETCBCH", "ZECBCH",
                                                "XMRBCH", "DSHBCH"]
    assert config.assets[0].prec_save == 20 and config.assets[0].prec_show == 8
    assert all(str(m.min_amount) == "0.001" and m.fee_prec == 4 for m in config.markets)


def test_golden_config_loads_in_full() -> None:
    config = load_matchengine(read_json(SHARED / "golden" / "matchengine.json"))
    assert config.slice_interval == 3600 and config.db_log is not None
    assert config.db_log.name == "trade_log" and config.brokers == "127.0.0.1:9092"
    assert config.markets[-1].money_prec == 2


def _broken(path: list[Any], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(default_matchengine_data())
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize("path,value,message", [
    (["assets"], KeyError, "assets: required field is missing"),
    (["assets", 1, "prec_save"], "12", "assets[1].prec_save: must be an integer"),
    (["assets", 1, "prec_show"], 13, "assets[1].prec_show: must be <= prec_save"),
    (["assets", 2, "name"], "X" * 16, "assets[2].name: must be 1 to 15 characters"),
    (["markets", 0, "stock", "name"], "NOPE", "markets[0].stock.name: unknown asset 'NOPE'"),
    (["markets", 3, "money"], KeyError, "markets[3].money: required field is missing"),
    (["markets", 1, "min_amount"], "abc", "markets[1].min_amount: must be a decimal number"),
    (["markets", 2, "stock", "prec"], 13, "markets[2]: stock.prec + money.prec must be <="),
    (["markets", 0, "fee_prec"], -1, "markets[0].fee_prec: must be >= 0"),
    (["slice_interval"], 0, "slice_interval: must be >= 1"),
])
def test_invalid_config_names_the_field(path: list[Any], value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_matchengine(_broken(path, value), embedded=True)
    assert str(e.value).startswith(message)


def test_production_config_requires_its_blocks() -> None:
    with pytest.raises(ConfigError, match="db_log: required field is missing"):
        load_matchengine(default_matchengine_data())


def test_run_refuses_invalid_config_with_the_field(tmp_path: Path) -> None:
    bad = _broken(["markets", 0, "stock", "prec"], "8")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = subprocess.run([sys.executable, "-m", "exchange_server", "run", "--config", str(path),
                             "--data-dir", str(tmp_path / "d")], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "markets[0].stock.prec: must be an integer" in result.stderr
    (tmp_path / "nojson.json").write_text("{")
    result = subprocess.run([sys.executable, "-m", "exchange_server", "run", "--config",
                             str(tmp_path / "nojson.json")], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "not valid JSON" in result.stderr
