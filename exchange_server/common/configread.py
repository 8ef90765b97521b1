"""Reading a config dataclass from JSON, so each key, default and rule is declared once: on the field.

Why: the readers used to restate every default next to the dataclass that also declared it
(``root.integer("port", 3306)`` beside ``port: int = 3306``), and the two could drift apart.
Here a config is a dataclass whose fields carry what the reader needs -- the JSON key, bounds,
whether the key is required -- in :func:`setting`; :func:`load_fields` walks the fields with their
types and reads each key that is present.  An absent key is simply not passed, so the dataclass
default applies and is the only statement of it.  Errors start with the JSON path of the field
(``markets[2].stock.prec: ...``), built by :class:`Node`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from exchange_server.common import decimals

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the field."""


_MISSING: Any = object()


class Node:
    """A JSON object being read, remembering its path for error messages."""

    def __init__(self, data: Any, path: str = "") -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path or '(root)'}: must be a JSON object")
        self.data = data
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, default: Any) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise ConfigError(f"{self.where(key)}: required field is missing")
            return default
        return value

    def has(self, key: str) -> bool:
        return key in self.data

    def string(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, str):
            raise ConfigError(f"{self.where(key)}: must be a string")
        return value

    def integer(self, key: str, default: Any = _MISSING, minimum: float | None = None,
            maximum: int | None = None) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{self.where(key)}: must be an integer")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self.where(key)}: must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self.where(key)}: must be <= {maximum}")
        return value

    def real(self, key: str, default: Any = _MISSING, minimum: float | None = None) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{self.where(key)}: must be a number")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self.where(key)}: must be >= {minimum}")
        return float(value)

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, bool):
            raise ConfigError(f"{self.where(key)}: must be true or false")
        return value

    def obj(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        return Node(value, self.where(key))

    def array(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, list):
            raise ConfigError(f"{self.where(key)}: must be an array")
        return value

    def str_or_list(self, key: str, default: Any = _MISSING) -> Any:
        """Fields like ``svr.bind`` and rpc client ``addr`` take a string or an array of them."""
        value = self._get(key, default)
        if value is default:
            return value
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(f"{self.where(key)}: must be a string or a non-empty array of strings")

    def items(self, key: str, read: Callable[[Node], T], default: Any = _MISSING) -> list[T]:
        values = self.array(key, default)
        if values is default:
            return values
        return [read(Node(v, f"{self.where(key)}[{i}]")) for i, v in enumerate(values)]

    def decimal(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        parsed = decimals.parse(value)
        if parsed is None:
            raise ConfigError(f"{self.where(key)}: must be a decimal number in a string")
        return parsed


def read_json(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from e


# -- fields that say how they are read ------------------------------------------------------------

#: ``required=STANDALONE``: the key is required unless the config is read for embedded mode.
#: (Any other string works the same way: the key is optional when ``load_fields`` is given that
#: string in ``optional``.)
STANDALONE = "standalone"

#: reads a present key: ``(node, key, default)`` -> value (``default`` is the field's, or missing)
Reader = Callable[[Node, str, Any], Any]
#: checks or adjusts a value just read: ``(node, key, value)`` -> value
Then = Callable[[Node, str, Any], Any]


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one field is read (see :func:`setting` for the meaning of each part)."""

    key: str | None = None
    minimum: int | float | None = None
    maximum: int | None = None
    required: bool | str = False
    read: Reader | None = None
    then: Then | None = None
    skip: bool = False


def rule(*, key: str | None = None, minimum: int | float | None = None,
         maximum: int | None = None, required: bool | str = False, read: Reader | None = None,
         then: Then | None = None, skip: bool = False) -> Rule:
    """How a field is read, for a dataclass that must not depend on this module (the engine's
    config types): passed to :func:`load_fields` in ``rules``; the arguments are those of
    :func:`setting`."""
    return Rule(key, minimum, maximum, required, read, then, skip)


def setting(default: Any = _MISSING, *, default_factory: Any = _MISSING, key: str | None = None,
            minimum: int | float | None = None, maximum: int | None = None,
            required: bool | str = False, read: Reader | None = None, then: Then | None = None,
            skip: bool = False) -> Any:
    """A config dataclass field: its default (the only statement of it) and how it is read.

    ``key``: the JSON key when it differs from the field name; ``minimum``/``maximum``: bounds of
    a number; ``required``: the key must be present even though the field has a default (for
    dataclasses that are also built in code), or ``STANDALONE``; ``read``: a reader replacing
    the one chosen by the field's type; ``then``: a check or conversion of the value read;
    ``skip``: not read from the file (the caller passes it).
    """
    metadata = {"config": Rule(key, minimum, maximum, required, read, then, skip)}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    if default is not _MISSING:
        return dataclasses.field(default=default, metadata=metadata)
    return dataclasses.field(metadata=metadata)


def block(read: Callable[[Node], Any], *, null: bool = True) -> Reader:
    """A reader for a nested object read by ``read`` (given the object's :class:`Node`).

    With ``null=False`` a JSON ``null`` is an error even where the field's default is None.
    """
    def reader(node: Node, key: str, default: Any) -> Any:
        child = node.obj(key, default if null else _MISSING)
        return child if child is default else read(child)
    return reader


def default_of(cls: type, name: str) -> Any:
    """The declared default of a field (for rules whose fallback is computed elsewhere)."""
    f = _fields(cls)[name][0]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    if f.default is dataclasses.MISSING:
        raise LookupError(f"{cls.__name__}.{name} has no default")
    return f.default


def load_fields(cls: type[T], node: Node, *, embedded: bool = False,
                optional: tuple[str, ...] = (), rules: dict[str, Rule] | None = None,
                first: tuple[str, ...] = (), **given: Any) -> T:
    """Build ``cls`` from ``node``: each field from its key when present, else its default.

    Fields in ``given`` are taken as they are; ``rules`` replace the fields' own metadata;
    ``first`` names fields checked and read before the others (the order errors are found in);
    ``optional`` names the ``required`` tags that do not apply (``embedded`` adds STANDALONE).
    Every required key is checked for presence before any value is read.
    """
    todo = _todo(cls, rules or {}, first, given)
    waived = (*optional, STANDALONE) if embedded else optional
    required = {name for name, (f, _, r) in todo.items() if _required(f, r, waived)}
    for name, (_, _, field_rule) in todo.items():
        key = field_rule.key or name
        if name in required and not node.has(key):
            raise ConfigError(f"{node.where(key)}: required field is missing")
    values = dict(given)
    for name, (f, hint, field_rule) in todo.items():
        key = field_rule.key or name
        if node.has(key):
            values[name] = read_field(node, key, f, hint, field_rule, name in required)
    return cls(**values)


def _todo(cls: type, rules: dict[str, Rule], first: tuple[str, ...],
          given: dict[str, Any]) -> dict[str, tuple[dataclasses.Field[Any], Any, Rule]]:
    fields = _fields(cls)
    order = [*first, *(name for name in fields if name not in first)]
    todo = {}
    for name in order:
        f, hint = fields[name]
        field_rule = rules.get(name) or _rule(f)
        if name not in given and f.init and not field_rule.skip:
            todo[name] = (f, hint, field_rule)
    return todo


def read_field(node: Node, key: str, f: dataclasses.Field[Any], hint: Any, field_rule: Rule,
               required: bool) -> Any:
    """One present key, read by the field's reader (given or chosen by its type).  The reader
    gets the field's default unless the key is required: a JSON ``null`` then is an error."""
    has_default = f.default is not dataclasses.MISSING and not required
    default = f.default if has_default else _MISSING
    reader = field_rule.read or _reader_for(hint, field_rule)
    value = reader(node, key, default)
    return field_rule.then(node, key, value) if field_rule.then is not None else value


def _required(f: dataclasses.Field[Any], rule: Rule, waived: tuple[str, ...]) -> bool:
    if isinstance(rule.required, str):
        return rule.required not in waived
    if rule.required:
        return True
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _rule(f: dataclasses.Field[Any]) -> Rule:
    rule = f.metadata.get("config")
    return rule if isinstance(rule, Rule) else Rule()


@cache
def _fields(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _reader_for(hint: Any, rule: Rule) -> Reader:
    hint = _without_none(hint)
    if hint is bool:
        return lambda node, key, default: node.boolean(key, default)
    if hint is int:
        return lambda node, key, default: node.integer(key, default, rule.minimum, rule.maximum)
    if hint is float:
        return lambda node, key, default: node.real(key, default, rule.minimum)
    if hint is str:
        return lambda node, key, default: node.string(key, default)
    if hint is Decimal:
        return lambda node, key, default: node.decimal(key, default)
    if hint == list[str]:
        return lambda node, key, default: node.str_or_list(key, default)
    if hint == tuple[str, ...]:
        return lambda node, key, default: _tuple(node.str_or_list(key, default))
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        cls = hint
        return block(lambda child: load_fields(cls, child))
    raise TypeError(f"no config reader for {hint!r}: give the field a read=")


def _without_none(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
