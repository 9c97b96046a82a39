"""Config text into a tree, and typed reads of the tree: each failure is one ConfigError."""

from __future__ import annotations

import datetime
import difflib
import enum
import ipaddress
import re
import sys
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NoReturn,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
)
from urllib.parse import urlsplit

import yaml

from klag_collector.durations import parse_duration
from klag_collector.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

V = TypeVar("V")
_Choice = TypeVar("_Choice", bound=enum.Enum)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Underscores are not valid in DNS names but are common in container service names.
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)


class FrozenMap(Mapping[str, V]):
    """A read-only, hashable mapping that keeps insertion (file) order, for frozen dataclasses."""

    __slots__ = ("_data",)

    def __init__(self, data: Iterable[Tuple[str, V]] | Mapping[str, V] = ()) -> None:
        self._data: Dict[str, V] = dict(data)

    def __getitem__(self, key: str) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return repr(self._data)


def join(path: str, key: str) -> str:
    """The key path of *key* inside *path*: ``a.b``, or ``a["b.c"]`` when *key* is not a name."""
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]'


# The kinds of value a config file holds, in words; in this order, since a bool is an int.
_KINDS: Tuple[Tuple[Any, str], ...] = (
    (type(None), "null"),
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "a table"),
    ((datetime.date, datetime.time), "a date/time"),
)


def kind(value: Any) -> str:
    """What a value is, in words, for "must be X, not Y" messages (never the value itself)."""
    for types, words in _KINDS:
        if isinstance(value, types):
            return words
    return type(value).__name__


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f'unknown key; did you mean "{close[0]}"?'
    return "unknown key; expected one of: " + ", ".join(allowed)


def is_host(text: str) -> bool:
    """Whether *text* is an IP literal (IPv6 without brackets) or a host name."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return _HOSTNAME.fullmatch(text) is not None


class Section:
    """One table of the tree, with its key path, for terse optional reads."""

    def __init__(self, reader: "Reader", table: Mapping[str, Any], path: str) -> None:
        self.reader = reader
        self.table = table
        self.path = path

    def get(self, key: str, default: Any, read: Callable[..., Any], *args: Any) -> Any:
        """``read(value, path, *args)`` when *key* is present, else *default* as it is."""
        if key not in self.table:
            return default
        return read(self.table[key], join(self.path, key), *args)


class Reader:
    """Reads values out of one file's tree; every failure names that file."""

    def __init__(self, source: str) -> None:
        self.source = source
        # Key paths read only to be type-checked and dropped (klag-exporter keys of no use here).
        self.ignored: List[str] = []

    def fail(self, path: str, reason: str) -> NoReturn:
        raise ConfigError(self.source, path, reason)

    def table(self, value: Any, path: str, allowed: Optional[Sequence[str]]) -> Mapping[str, Any]:
        """A table whose keys are strings and, unless *allowed* is None, among *allowed*.

        YAML's bare ``exporter:`` is null; it reads as an empty table, like TOML's ``[exporter]``.
        """
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path or "(top level)", f"must be a table, not {kind(value)}")
        for key in value:
            if not isinstance(key, str):
                self.fail(path or "(top level)", f"keys must be strings, not {kind(key)}")
            if allowed is not None and key not in allowed:
                self.fail(join(path, key), _unknown_key(key, allowed))
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {kind(value)}")
        if not value.strip():
            self.fail(path, "must not be empty")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, not {kind(value)}")
        return value

    def integer(self, value: Any, path: str, minimum: int, maximum: Optional[int] = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, not {kind(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"{minimum}..{maximum}" if maximum is not None else f"at least {minimum}"
            self.fail(path, f"must be {bound}" if maximum is None else f"must be in {bound}")
        return value

    def number(self, value: Any, path: str, minimum: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"must be a number, not {kind(value)}")
        if not value >= minimum:  # also rejects NaN
            self.fail(path, f"must be at least {minimum:g}")
        return float(value)

    def duration(self, value: Any, path: str, minimum: Optional[float] = None) -> float:
        """Seconds; greater than zero unless a *minimum* (inclusive) is given."""
        if not isinstance(value, str):
            self.fail(path, f'must be a duration string such as "30s", not {kind(value)}')
        try:
            seconds = parse_duration(value)
        except ValueError as e:
            self.fail(path, f"bad duration: {e}")
        if minimum is None and seconds <= 0:
            self.fail(path, "must be longer than zero")
        if minimum is not None and seconds < minimum:
            self.fail(path, f"must be at least {minimum:g}s")
        return seconds

    def choice(self, value: Any, path: str, allowed: Sequence[str]) -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {kind(value)}")
        if value not in allowed:
            self.fail(path, "must be " + " or ".join(f'"{a}"' for a in allowed))
        return value

    def member(self, value: Any, path: str, choices: Type[_Choice]) -> _Choice:
        """The member of the enum *choices* whose value *value* is."""
        return choices(self.choice(value, path, [member.value for member in choices]))

    def patterns(self, value: Any, path: str) -> Tuple[re.Pattern[str], ...]:
        """Regular expressions, compiled; a bad one is reported with its index."""
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            self.fail(path, f"must be a list of regular expressions, not {kind(value)}")
        compiled = []
        for i, pattern in enumerate(value):
            if not isinstance(pattern, str):
                self.fail(f"{path}[{i}]", f"must be a string, not {kind(pattern)}")
            try:
                compiled.append(re.compile(pattern))
            except re.error as e:
                where = f" at position {e.pos}" if e.pos is not None else ""
                self.fail(f"{path}[{i}]", f"invalid regular expression: {e.msg}{where}")
        return tuple(compiled)

    def host(self, value: Any, path: str) -> str:
        text = self.string(value, path)
        if text.startswith("[") and text.endswith("]"):
            self.fail(path, "write an IPv6 address without brackets")
        if not is_host(text):
            self.fail(path, "is not a host name or IP address")
        return text

    def server(self, value: Any, path: str) -> str:
        """One bootstrap server: ``host``, ``host:port`` or ``[IPv6]:port``."""
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {kind(value)}")
        item = value.strip()
        if not item:
            self.fail(path, "is empty")
        bracketed = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", item)
        if bracketed:
            host, port = bracketed.groups()
        elif item.count(":") > 1:
            self.fail(path, "an IPv6 address needs brackets: [address]:port")
        else:
            host, _, port = item.partition(":") if ":" in item else (item, "", None)
        if not is_host(host):
            self.fail(path, "is not host:port")
        if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
            self.fail(path, "has a port outside 1..65535")
        return item

    def url(self, value: Any, path: str) -> str:
        text = self.string(value, path)
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.fail(path, "must be an http:// or https:// URL")
        return text


def parse_toml(text: str, source: str) -> Any:
    """The tree of TOML *text*; a syntax error names its line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        line = re.search(r"\(at line (\d+), column \d+\)", message)
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
        where = f"line {line.group(1)}" if line else ""
        raise ConfigError(source, where, "invalid TOML: " + " ".join(reason.split())) from None


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate keys, which TOML forbids and PyYAML would overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f'duplicate key "{key}"', key_node.start_mark
                )
            seen.add(key if isinstance(key, str) else id(key_node))
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """The tree of YAML *text*; a syntax error names its line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        # Only problem and context: str(e) quotes the offending line, which may hold a secret.
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        parts = [getattr(e, "problem", None), getattr(e, "context", None)]
        reason = "; ".join(p for p in parts if p) or type(e).__name__
        raise ConfigError(source, where, "invalid YAML: " + " ".join(reason.split())) from None
