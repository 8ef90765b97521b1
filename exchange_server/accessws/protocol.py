"""Frames of the WebSocket API (websocket.md 2): JSON text and the WebSocket framing around it.

Local JSON is written in the original's (jansson's) style through ``common.jsonfmt``: one line,
``", "`` and ``": "`` separators, keys in insertion order.  Server-to-client WebSocket frames
are never masked, so a notification's frame is built once and written as is to every
subscriber.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from exchange_server.common import jsonfmt

#: The original reads ids with jansson (int64): anything outside is a malformed request.
ID_MIN = -(2**63)
ID_MAX = 2**63 - 1

SUCCESS = {"status": "success"}

_LEN2 = struct.Struct("!BBH").pack
_LEN8 = struct.Struct("!BBQ").pack


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame (FIN + opcode 1) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return _LEN2(0x81, 126, n) + payload
    return _LEN8(0x81, 127, n) + payload


def result_body(result: Any, req_id: int) -> bytes:
    return jsonfmt.reply_body(result, req_id)


def error_body(code: int, message: str, req_id: int) -> bytes:
    return jsonfmt.error_body(code, message, req_id)


def notify_body(method: str, params: Any) -> bytes:
    """``{"method": ..., "params": ..., "id": null}``."""
    return jsonfmt.dumps({"method": method, "params": params, "id": None}).encode()


def notify_frame(method: str, params: Any) -> bytes:
    return text_frame(notify_body(method, params))


class BadRequest(Exception):
    """Not a request: the connection is closed without an answer (websocket.md 2)."""


def parse_request(data: bytes | str) -> tuple[str, list[Any], int]:
    """``(method, params, id)`` of one message, or BadRequest."""
    try:
        request = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadRequest("not JSON") from None
    if type(request) is not dict:
        raise BadRequest("not an object")
    method = request.get("method")
    params = request.get("params")
    req_id = request.get("id")
    if type(req_id) is not int or not ID_MIN <= req_id <= ID_MAX:
        raise BadRequest("id is not an integer")
    if type(method) is not str:
        raise BadRequest("method is not a string")
    if type(params) is not list:
        raise BadRequest("params is not an array")
    return method, params, req_id


def parse_reply(body: bytes) -> tuple[Any, Any]:
    """``(error, result)`` of a backend reply body; ValueError if it is not a reply object."""
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"backend reply is not JSON: {e}") from None
    if type(reply) is not dict or "result" not in reply:
        raise ValueError("backend reply is not a reply object")
    return reply.get("error"), reply["result"]


def byte_len(text: str) -> int:
    """Length as the original's ``strlen`` sees it (UTF-8 bytes)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
