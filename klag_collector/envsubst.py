"""Environment references in a config file's raw text, resolved before it is parsed.

Forms, as in klag-exporter, plus an escape:

- ``${VAR}``: the variable's value; an error when it is unset. klag-exporter inserts an empty
  string instead, which turns a forgotten ``KAFKA_PASSWORD`` into a silent outage.
- ``${VAR:-default}``: the value, or *default* when the variable is unset or empty (the shell's
  meaning of ``:-``).
- ``${?VAR}``: the value, or an empty string; the explicit opt-in to klag-exporter's behaviour.
- ``$${``: a literal ``${``.

Because the text is substituted before parsing (so ``http_port = ${PORT:-8000}`` works), a
value is escaped for the quoting it lands in: inside "..." a password with a quote or a
backslash must still parse, and parse to exactly itself. References in comments are left
alone, so klag-exporter's commented-out examples do not demand their variables. Quotes and
comments are tracked line by line; a reference inside a multi-line string is inserted raw.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

from klag_collector.errors import ConfigError

_TRIGGER = re.compile(r"\$\$\{|\$\{")
_REFERENCE = re.compile(r"\$\{(\?)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}\n]*))?\}")
_DOUBLE_QUOTE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def interpolate(text: str, environ: Mapping[str, str], fmt: str, source: str) -> str:
    """Return *text* with its environment references resolved; *fmt* is "toml" or "yaml"."""
    lines = text.split("\n")
    return "\n".join(
        _interpolate_line(line, number, environ, fmt, source)
        for number, line in enumerate(lines, start=1)
    )


def _interpolate_line(
    line: str, number: int, environ: Mapping[str, str], fmt: str, source: str
) -> str:
    if "${" not in line:
        return line
    out = []
    pos = 0
    while True:
        trigger = _TRIGGER.search(line, pos)
        if trigger is None:
            out.append(line[pos:])
            return "".join(out)
        start = trigger.start()
        out.append(line[pos:start])
        quote = _quoting_at(line, start, fmt)
        if quote == "#":
            out.append(line[start:])
            return "".join(out)
        if trigger.group() == "$${":
            out.append("${")
            pos = trigger.end()
            continue
        ref = _REFERENCE.match(line, start)
        if ref is None:
            raise ConfigError(
                source,
                f"line {number}",
                "malformed ${...} reference; write ${VAR} or ${VAR:-default}, "
                "or $${ for a literal ${",
            )
        optional, name, default = ref.groups()
        value = environ.get(name)
        if default is not None and not value:
            value = default
        elif value is None and optional:
            value = ""
        elif value is None:
            raise ConfigError(
                source,
                f"line {number}",
                f"environment variable {name} is not set "
                f"(write ${{{name}:-default}} to give a default)",
            )
        out.append(_escape(value, quote, name, number, source, fmt))
        pos = ref.end()


def _quoting_at(line: str, end: int, fmt: str) -> Optional[str]:
    """What *line[end]* sits in: '"', "'", "#" for a comment, or None for bare text."""
    state: Optional[str] = None
    pos = 0
    while pos < end:
        char = line[pos]
        if state is None:
            # In YAML "#" opens a comment only after whitespace; in TOML anywhere outside strings.
            if char == "#" and (fmt == "toml" or pos == 0 or line[pos - 1] in " \t"):
                return "#"
            if char in "\"'":
                state = char
        elif state == '"':
            if char == "\\":
                pos += 1
            elif char == '"':
                state = None
        elif char == "'":
            if fmt == "yaml" and line[pos + 1 : pos + 2] == "'":
                pos += 1
            else:
                state = None
        pos += 1
    return state


def _escape(value: str, quote: Optional[str], name: str, number: int, source: str, fmt: str) -> str:
    if quote == '"':
        return "".join(
            _DOUBLE_QUOTE_ESCAPES.get(c, f"\\u{ord(c):04x}" if ord(c) < 0x20 else c)
            for c in value
        )
    if quote == "'":
        if "\n" in value or (fmt == "toml" and "'" in value):
            raise ConfigError(
                source,
                f"line {number}",
                f"the value of {name} cannot go inside '...' quotes; use double quotes",
            )
        return value.replace("'", "''") if fmt == "yaml" else value
    return value
