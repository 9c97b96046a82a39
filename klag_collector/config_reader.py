"""Config text into a tree, and typed reads of the tree: each failure is one ConfigError.

The text may be hostile: nesting, number lengths and YAML's aliases, anchors and tags are bounded
or refused before they reach tomllib's recursion, int() or PyYAML's constructors, and no parser
message is passed on with the text it quotes.
"""

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
    cast,
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

# Nesting deeper than this (tables, lists, parts of a dotted key) is refused before it is read:
# tomllib and PyYAML's composer recurse once per level, and tomllib takes time quadratic in the
# parts of a key. Real files nest 4 deep.
MAX_DEPTH = 64
# Digits of one number: beyond any setting, and far below the 4300 that int() refuses to read.
MAX_DIGITS = 100

# re's messages quote pieces of the pattern ("unknown group name 'x'", "bad escape \\q"): cut.
_PATTERN_PIECE = re.compile(
    r"(?:(?<=escape)|(?<=range)|(?<=extension)|(?<=name)|(?<=reference)) .*", re.S
)
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
                problem = _PATTERN_PIECE.sub("", e.msg)
                self.fail(f"{path}[{i}]", f"invalid regular expression: {problem}{where}")
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
    """The tree of TOML *text*; a syntax error names its line and column."""
    _check_toml_shape(text, source)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        at = re.search(r"\(at line (\d+), column (\d+)\)", message)
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
        where = f"line {at.group(1)}, column {at.group(2)}" if at else ""
        raise ConfigError(source, where, "invalid TOML: " + _without_text(reason)) from None


# Strings (multi-line ones first; unterminated ones to the end of their line or the text),
# comments, and the bare text between them, in which _TOML_MARK finds what nests and numbers.
_TOML_TOKEN = re.compile(
    r'"""(?:\\.|[^\\])*?(?:"""\"{0,2}|\Z)'
    r"|'''.*?(?:'''\'{0,2}|\Z)"
    r'|"(?:\\.|[^"\\\n])*"?'
    r"|'[^'\n]*'?"
    r"|#[^\n]*"
    r"|[^\"'#]+",
    re.S,
)
_TOML_MARK = re.compile(r"[\[\]{}\n=,.]|[0-9][0-9_]*")


def _check_toml_shape(text: str, source: str) -> None:
    """Refuse, on the raw text and before tomllib reads it, nesting past MAX_DEPTH (brackets,
    or dots in one key) and numbers past MAX_DIGITS; the rest is tomllib's to judge."""
    depth = dots = 0
    for token in _TOML_TOKEN.finditer(text):
        if token.group()[0] in "\"'#":
            continue
        for mark in _TOML_MARK.finditer(text, token.start(), token.end()):
            sign = mark.group()
            if sign == ".":
                dots += 1
            elif sign[0].isdigit():
                if len(sign.replace("_", "")) > MAX_DIGITS:
                    reason = f"a number of more than {MAX_DIGITS} digits"
                    _refuse_at(source, text, mark.start(), reason)
            elif sign in "[{":
                depth, dots = depth + 1, 0
            elif sign in "]}":
                depth, dots = max(depth - 1, 0), 0
            else:  # a line break, "=" or ",": a key ends
                dots = 0
            if depth > MAX_DEPTH or dots >= MAX_DEPTH:
                reason = f"nested more than {MAX_DEPTH} levels deep"
                _refuse_at(source, text, mark.start(), reason)


def _refuse_at(source: str, text: str, pos: int, reason: str) -> NoReturn:
    """A ConfigError at *text[pos]*, named by its line and column."""
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    raise ConfigError(source, f"line {line}, column {column}", reason)


# Parser messages quote what they found ("found undefined alias 'hunter2'", "expected ',' or
# ']', but found '$'", "Illegal character '\\x01'"), which may be a piece of a secret: cut.
_QUOTED = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_FOUND = re.compile(
    rf",? but (?:found|got)\b.*|\b(character|alias|anchor|handle|tag) {_QUOTED}"
    r"|\s*0x[0-9a-fA-F]+",
    re.S,
)


def _without_text(message: str) -> str:
    """A parser's *message* without the text it quotes from the file, on one line."""
    return " ".join(_FOUND.sub(lambda m: m.group(1) or "", message).split())


def _mark_at(mark: Optional[yaml.Mark]) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader without what a config file has no use for and a hostile one does:
    aliases and anchors (one value standing for others, the "billion laughs"), explicit tags
    (``!!int`` runs int() on any text), nesting past MAX_DEPTH (the composer recurses per level),
    numbers past MAX_DIGITS; and duplicate keys, which TOML forbids and PyYAML would overwrite.
    Each is a ConfigError naming the key path, or the line and column where there is none."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self._composing: List[str] = []  # key paths of the nodes being composed, outermost first
        self._paths: Dict[int, str] = {}  # id(node) -> its key path, for errors found constructing

    def _refuse(self, path: str, mark: yaml.Mark, reason: str) -> NoReturn:
        raise ConfigError(self.source, path or _mark_at(mark), reason)

    def compose_node(self, parent: Optional[yaml.Node], index: Any) -> Optional[yaml.Node]:
        event = self.peek_event()
        if len(self._composing) >= MAX_DEPTH:
            self._refuse("", event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
        path = _child_path(self._composing[-1] if self._composing else "", index)
        # A key (index None) is named by its mapping's path.
        in_key = " (in a key)" if index is None and parent is not None else ""
        refused = _refused_event(event)
        if refused:
            self._refuse(path, event.start_mark, refused + in_key)
        self._composing.append(path)
        # Not None: there was an event to compose.
        node = cast(yaml.Node, super().compose_node(parent, index))
        self._composing.pop()
        self._paths[id(node)] = path
        if node.tag in _NUMBER_TAGS and sum(map(str.isdigit, node.value)) > MAX_DIGITS:
            reason = f"is a number of more than {MAX_DIGITS} digits{in_key}"
            self._refuse(path, node.start_mark, reason)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        path = self._paths.get(id(node), "")
        first: Dict[str, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in first:
                self._refuse(join(path, key), key_node.start_mark,
                             f"duplicate key (first on line {first[key]})")
            if isinstance(key, str):
                first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> datetime.date:
        """An unquoted date such as 2024-13-45 matches YAML's pattern but not the calendar."""
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            self._refuse(self._paths.get(id(node), ""), node.start_mark,
                         "is not a valid date/time; quote it if it is text")


_ConfigLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", _ConfigLoader.construct_yaml_timestamp
)


def _child_path(outer: str, index: Any) -> str:
    """The key path of the node at *index* (a list index, a key's node, or None for a key)."""
    if isinstance(index, int):
        return f"{outer}[{index}]"
    if isinstance(index, yaml.ScalarNode):
        return join(outer, index.value)
    return outer if index is None else join(outer, "?")


def _refused_event(event: yaml.Event) -> Optional[str]:
    """Why *event* has no place in a config file, if it has none."""
    if isinstance(event, yaml.AliasEvent):
        return "YAML aliases (*name) are not allowed; write the value out"
    if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
        return "YAML anchors (&name) are not allowed"
    if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)) and event.tag is not None:
        return "YAML tags (!name, !!int, ...) are not allowed; write the plain value"
    return None


def parse_yaml(text: str, source: str) -> Any:
    """The tree of YAML *text*; a syntax error names its line and column."""
    try:
        loader = _ConfigLoader(text, source)
    except yaml.reader.ReaderError as e:  # a character YAML does not allow raw: a control, ...
        _refuse_at(source, text, e.position, f"invalid YAML: {e.reason}")
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        parts = [e.problem, e.context]
        reason = "; ".join(_without_text(p) for p in parts if p) or type(e).__name__
        where = _mark_at(e.problem_mark or e.context_mark)
        raise ConfigError(source, where, "invalid YAML: " + reason) from None
    except ConfigError:
        raise
    except ValueError:
        # PyYAML's scanner runs chr() on "\U0011ffff" and int() on a %YAML version unchecked.
        where = _mark_at(loader.get_mark())
        raise ConfigError(source, where, "invalid YAML: an escape or number out of range") from None
    finally:
        loader.dispose()
