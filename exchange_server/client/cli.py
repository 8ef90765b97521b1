"""``exchange-server call METHOD ARGS...``: call one API method from a shell.

Examples::

    exchange-server call asset.list
    exchange-server call balance.update 1 BTC deposit 1 10 '{}'
    exchange-server call order.put_limit 1 BTCBCH 1 1 100 0.002 0.001 api
    exchange-server call --url http://10.0.0.5:8080/ order.depth BTCBCH 10 0
    exchange-server call --json order.depth '["BTCBCH", 10, "0"]'
    exchange-server call --ws ws://127.0.0.1:8090/ depth.subscribe BTCBCH 10 0 --count 3
    exchange-server call --ws ws://127.0.0.1:8090/ --token T asset.query
    exchange-server call --list            # every documented method
    exchange-server call --describe order.put_limit

Each ARG is converted with the method's documented param type: integers become JSON integers,
decimals and other strings stay strings (so ``10`` for a decimal param is sent as ``"10"``), and
object params are parsed as JSON.  For a method without docs, an ARG that reads as a JSON
integer, object, array, true, false or null is sent as that, anything else as a string.
``--json`` takes the whole params array as one JSON argument instead.

The number of ARGS is checked against the method's documented params: a wrong count prints a
usage line naming them (``usage: exchange-server call order.cancel user_id market order_id``)
on stderr and exits with 2, as argparse does for its own usage errors.

The result is printed as JSON exactly as the server sent it (decimal strings unchanged).  Exit
status: 0 success, 1 error answer (the code and message are printed on stderr), 2 no answer
(connection failure, HTTP 400/500) or a wrong number of params, 64 other bad usage, 141 the
output was closed early (``exchange-server call --list | head``: it stops quietly, as a tool
killed by SIGPIPE would).

Wiring (in exchange_server/cli.py's build_parser): ``add_call_parser(sub)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from exchange_server.client.errors import ApiError, TransportError

EXIT_ERROR = 1
EXIT_TRANSPORT = 2
#: a wrong number of params: argparse's exit status for usage errors
EXIT_PARAM_COUNT = 2
EXIT_USAGE = 64
#: stdout was closed before everything was written (128 + SIGPIPE, what a shell reports for a
#: tool that SIGPIPE killed)
EXIT_OUTPUT_CLOSED = 141


def _method_entry(name: str, ws: bool) -> Any:
    from exchange_server.apidoc.registry import http_methods, ws_methods

    table = ws_methods() if ws else http_methods()
    return table.get(name)


def convert_args(method: Any, args: list[str]) -> list[Any]:
    """Turn command-line words into params using the method's documented param schemas."""
    out: list[Any] = []
    params = list(method.params) if method is not None and not method.params_ignored else []
    for i, text in enumerate(args):
        schema: dict[str, Any] | None = None
        if i < len(params):
            schema = params[i].schema
        elif params and params[-1].variadic:
            schema = params[-1].schema
        out.append(_convert(text, schema))
    return out


def _convert(text: str, schema: dict[str, Any] | None) -> Any:
    kind = None if schema is None else schema.get("type")
    if schema is not None and kind is None and "oneOf" in schema:
        kinds = {s.get("type") for s in schema["oneOf"]}
        kind = next((k for k in kinds if k != "null"), None)
    if kind == "string":
        return text
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{text!r}: an integer is expected") from None
    if kind in ("object", "array", "boolean"):
        try:
            return json.loads(text)
        except ValueError:
            raise UsageError(f"{text!r}: a JSON {kind} is expected") from None
    if kind == "number":
        try:
            return float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            raise UsageError(f"{text!r}: a number is expected") from None
    # undocumented: JSON when it reads as a non-string JSON value, else the text itself
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, (float, str)):
        return text  # "1.5" stays a string: decimals travel as strings
    return value


class UsageError(Exception):
    pass


class ParamCountError(UsageError):
    """The number of params does not fit the method; the message is the usage line."""


class OutputClosed(Exception):
    """stdout's reader went away (``| head``): stop quietly."""


def usage(name: str, method: Any, ws: bool) -> str:
    """``usage: exchange-server call [--ws URL] METHOD param ...`` for a documented method."""
    words = ["usage: exchange-server call", *(["--ws URL"] if ws else []), name]
    if method.params_ignored:
        words.append("[ANY ...]")
    for p in method.params:
        if p.variadic:
            words.append(f"{p.name} [{p.name} ...]" if p.required else f"[{p.name} ...]")
        else:
            words.append(p.name if p.required else f"[{p.name}]")
    return " ".join(words)


def check_count(name: str, method: Any, params: list[Any], ws: bool) -> None:
    """Raise :class:`ParamCountError` when ``params`` cannot be the method's params."""
    if method is None:
        return  # undocumented: the server decides
    fewest, most = method.param_count()
    if fewest <= len(params) and (most is None or len(params) <= most):
        return
    if most is None:
        wanted = f"at least {fewest}"
    elif fewest == most:
        wanted = str(fewest)
    else:
        wanted = f"{fewest} to {most}"
    noun = "param" if wanted in ("1", "at least 1") else "params"
    raise ParamCountError(f"{name} takes {wanted} {noun}, "
                          f"got {len(params)}\n{usage(name, method, ws)}")


def _emit(out: Any, text: str) -> None:
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        raise OutputClosed from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what is still
    buffered does not print a BrokenPipeError of its own."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # not a real file (tests capture it): nothing will be flushed to a closed pipe


def _describe(name: str, out: Any) -> int:
    from exchange_server.apidoc.registry import http_methods, ws_methods

    lines: list[str] = []
    for label, table in (("HTTP", http_methods()), ("WebSocket", ws_methods())):
        method = table.get(name)
        if method is None:
            continue
        lines.append(f"{name} ({label}): {method.summary}")
        lines.append("  " + usage(name, method, label == "WebSocket"))
        if method.params_ignored:
            lines.append("  params: any (ignored)")
        for p in method.params:
            flags = " (optional)" if not p.required else ""
            flags += " (repeatable)" if p.variadic else ""
            kind = p.schema.get("type", "any")
            lines.append(f"  {p.name}: {kind}{flags} - {p.doc()}")
        if method.result_doc:
            lines.append(f"  result: {method.result_doc}")
        lines += [f"  error {e.code} \"{e.message}\": {e.when}" for e in method.all_errors()]
    if not lines:
        sys.stderr.write(f"exchange-server call: {name}: no such documented method\n")
        return EXIT_USAGE
    _emit(out, "\n".join(lines) + "\n")
    return 0


def _list(out: Any) -> int:
    from exchange_server.apidoc.registry import http_methods, ws_methods

    lines = ["HTTP methods:"]
    lines += [f"  {name:24} {m.summary}" for name, m in http_methods().items()]
    lines.append("WebSocket methods (--ws URL):")
    lines += [f"  {name:24} {m.summary}" for name, m in ws_methods().items()]
    _emit(out, "\n".join(lines) + "\n")
    return 0


def _print(value: Any, out: Any) -> None:
    _emit(out, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


async def _call_ws(args: argparse.Namespace, params: list[Any], out: Any) -> None:
    from exchange_server.client.ws_client import WsClient

    async with WsClient(args.ws, timeout=args.timeout, reconnect=args.method.endswith(
            ".subscribe"), decode=False) as ws:
        if args.token:
            await ws.auth(args.token, "cli")
        if args.method.endswith(".subscribe"):
            kind = args.method[: -len(".subscribe")]
            sub = await ws.subscribe(kind, *params)
            _print({"status": "success"}, out)
            count = 0
            async for push in sub:
                _print({"method": f"{kind}.update", "params": push}, out)
                count += 1
                if args.count and count >= args.count:
                    break
            return
        _print(await ws.call(args.method, *params), out)


def cmd_call(args: argparse.Namespace) -> int:
    """The ``call`` subcommand."""
    try:
        return _call(args, sys.stdout)
    except OutputClosed:
        _silence_stdout()
        return EXIT_OUTPUT_CLOSED


def _params(args: argparse.Namespace) -> list[Any]:
    """The params from the command line, checked against the method's documented count."""
    method = _method_entry(args.method, bool(args.ws))
    if args.json:
        if len(args.args) != 1:
            raise UsageError("--json takes the params array as one argument")
        params = json.loads(args.args[0])
        if not isinstance(params, list):
            raise UsageError("--json: the params must be a JSON array")
    else:
        params = convert_args(method, args.args)
    check_count(args.method, method, params, bool(args.ws))
    return params


def _call(args: argparse.Namespace, out: Any) -> int:
    if args.list:
        return _list(out)
    if args.describe:
        return _describe(args.method or args.describe, out)
    if not args.method:
        sys.stderr.write("exchange-server call: METHOD is required (or --list)\n")
        return EXIT_USAGE
    try:
        params = _params(args)
    except (UsageError, ValueError) as e:
        sys.stderr.write(f"exchange-server call: {e}\n")
        return EXIT_PARAM_COUNT if isinstance(e, ParamCountError) else EXIT_USAGE
    try:
        if args.ws:
            asyncio.run(_call_ws(args, params, out))
        else:
            from exchange_server.client.http_client import HttpClient

            with HttpClient(args.url, timeout=args.timeout, decode=False) as client:
                _print(client.call(args.method, *params), out)
    except ApiError as e:
        sys.stderr.write(f"error {e.code}: {e.message}\n")
        return EXIT_ERROR
    except (TransportError, TimeoutError) as e:
        sys.stderr.write(f"exchange-server call: {e or 'timed out'}\n")
        return EXIT_TRANSPORT
    except KeyboardInterrupt:
        return 130
    return 0


def add_call_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``call`` to the ``exchange-server`` command's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "call", help="call an API method (operators)",
        description=__doc__.split("Wiring")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", nargs="?", metavar="METHOD", help="e.g. order.put_limit")
    parser.add_argument("args", nargs="*", metavar="ARGS",
                        help="the params, in order")
    parser.add_argument("--url", default=os.environ.get("EXCHANGE_SERVER_URL",
                                                        "http://127.0.0.1:8080/"),
                        help="accesshttp URL (default $EXCHANGE_SERVER_URL or "
                        "http://127.0.0.1:8080/)")
    parser.add_argument("--ws", metavar="URL", help="call a WebSocket method at this URL "
                        "instead (e.g. ws://127.0.0.1:8090/)")
    parser.add_argument("--token", help="WebSocket: server.auth with this token first")
    parser.add_argument("--count", type=int, default=0,
                        help="WebSocket *.subscribe: stop after this many pushes (0: run until "
                        "interrupted)")
    parser.add_argument("--json", action="store_true",
                        help="ARGS is one JSON array holding all the params")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--list", action="store_true", help="list the documented methods")
    parser.add_argument("--describe", nargs="?", const="", metavar="METHOD",
                        help="show a method's params, result and errors")
    parser.set_defaults(func=cmd_call)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m exchange_server.client.cli`` (same as ``exchange-server call``)."""
    parser = argparse.ArgumentParser(prog="exchange-server")
    sub = parser.add_subparsers(dest="command", required=True)
    add_call_parser(sub)
    args = parser.parse_args(["call", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
