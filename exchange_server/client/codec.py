"""Params out, results in: Decimal handling driven by the registry's schemas.

* out: a :class:`decimal.Decimal` param is sent as a JSON string in plain notation
  (``Decimal("1E-8")`` -> ``"0.00000001"``); tuples become arrays;
* in: a string whose schema says ``"format": "decimal"`` becomes a Decimal; everything else is
  left as the JSON parser made it (objects keep the server's key order).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

Schema = dict[str, Any]


def decimal_text(value: Decimal) -> str:
    """Plain notation (never an exponent), which every server version accepts."""
    if not value.is_finite():
        raise ValueError(f"{value} cannot be sent: only finite decimals are accepted")
    text = format(value, "f")
    return "0" if text in ("-0", "+0") else text


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot send {type(value).__name__} {value!r}")


def encode_request(method: str, params: list[Any] | tuple[Any, ...], req_id: int) -> bytes:
    return orjson.dumps({"method": method, "params": list(params), "id": req_id},
                        default=_default)


def encode(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)


def decode(schema: Schema | None, value: Any) -> Any:
    """``value`` with the decimal strings ``schema`` names turned into Decimals."""
    if not schema or value is None:
        return value
    if "oneOf" in schema or "anyOf" in schema:
        for alternative in schema.get("oneOf") or schema.get("anyOf") or []:
            kind = alternative.get("type")
            if kind == "null":
                continue
            if _matches_type(kind, value):
                return decode(alternative, value)
        return value
    if isinstance(value, str):
        if schema.get("format") == "decimal":
            try:
                return Decimal(value)
            except ArithmeticError:
                return value
        return value
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, list):
            extra = schema.get("additionalItems")
            out = []
            for i, v in enumerate(value):
                sub = items[i] if i < len(items) else (extra if isinstance(extra, dict) else None)
                out.append(decode(sub, v))
            return out
        if isinstance(items, dict):
            return [decode(items, v) for v in value]
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        extra_schema = extra if isinstance(extra, dict) else None
        return {k: decode(props.get(k, extra_schema), v) for k, v in value.items()}
    return value


def _matches_type(kind: Any, value: Any) -> bool:
    if kind is None:
        return True
    return {
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "integer": type(value) is int,
        "number": type(value) in (int, float),
        "boolean": type(value) is bool,
    }.get(kind, True)

