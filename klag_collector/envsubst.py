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
backslash must still parse, and parse to exactly itself. In unquoted text a value from the
environment must stay one scalar: one that would add a line, a comment, a key or YAML syntax
(an alias, a tag) is refused, so that no environment value can turn into keys or syntax that an
error message would then name. References in comments are left alone, so klag-exporter's
commented-out examples do not demand their variables. Quotes, brackets and comments are
tracked line by line; a reference inside a multi-line string is treated as unquoted text.
"""

from __future__ import annotations

import re
from typing import List, Mapping, Optional, Tuple

from klag_collector.errors import ConfigError

_TRIGGER = re.compile(r"\$\$\{|\$\{")
_REFERENCE = re.compile(r"\$\{(\?)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}\n]*))?\}")
_DOUBLE_QUOTE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Escaped inside "...", refused elsewhere: C0/C1 controls and Unicode line breaks, which YAML
# and TOML either reject raw or read as the end of a line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# os.environ holds undecodable bytes as lone surrogates.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# What makes a value in unquoted text more than one scalar: a comment, a key ("a: b", "? a",
# TOML's {a = b}), a YAML indicator at its start (alias, anchor, tag, quote, block scalar) and,
# inside brackets, a separator.
_BARE_UNSAFE = {
    "toml": re.compile(r"[#{}]"),
    "yaml": re.compile(
        r"(?:^|\s)#|:(?:\s|$)|^(?:(?:[?:-]|---|\.\.\.)(?:\s|$)|[\[\]{},#&*!|>'\"%@`])"
    ),
}
_FLOW_UNSAFE = re.compile(r"[\[\]{},?]")
_CANNOT = {
    "'": "cannot go inside '...' quotes; use double quotes",
    None: "would change the file's structure in unquoted text; put the reference in double quotes",
}


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
    where = f"line {number}"
    quoting = _Quoting(line, fmt)
    out: List[str] = []
    pos = 0
    while True:
        trigger = _TRIGGER.search(line, pos)
        quote = quoting.at(trigger.start()) if trigger else None
        if trigger is None or quote == "#":
            out.append(line[pos:])
            return "".join(out)
        out.append(line[pos : trigger.start()])
        if trigger.group() == "$${":
            out.append("${")
            pos = trigger.end()
            continue
        ref = _REFERENCE.match(line, trigger.start())
        if ref is None:
            raise ConfigError(
                source,
                where,
                "malformed ${...} reference; write ${VAR} or ${VAR:-default}, "
                "or $${ for a literal ${",
            )
        name, value, from_env = _resolve(ref, environ, source, where)
        text = _escape(value, quote, fmt, from_env)
        if text is None:
            reason = _CANNOT["'" if quote == "'" else None]
            raise ConfigError(source, where, f"the value of {name} {reason}")
        out.append(text)
        pos = ref.end()


def _resolve(
    ref: re.Match[str], environ: Mapping[str, str], source: str, where: str
) -> Tuple[str, str, bool]:
    """The variable's name, the text it stands for, and whether that text is the environment's."""
    optional, name, default = ref.groups()
    value = environ.get(name)
    if default is not None and not value:
        return name, default, False
    if value is None and optional:
        return name, "", False
    if value is None:
        raise ConfigError(
            source,
            where,
            f"environment variable {name} is not set "
            f"(write ${{{name}:-default}} to give a default)",
        )
    if _SURROGATE.search(value):
        raise ConfigError(source, where, f"the value of {name} is not UTF-8 text")
    return name, value, True


class _Quoting:
    """What the positions of one line sit in, read left to right in one pass: '"', "'", "#" for
    a comment, "[" for unquoted text inside a bracket opened on the line, or None."""

    def __init__(self, line: str, fmt: str) -> None:
        self.line = line
        self.fmt = fmt
        self.pos = 0
        self.state: Optional[str] = None
        self.flow = 0

    def at(self, end: int) -> Optional[str]:
        """The context of *line[end]*; *end* never goes back between calls."""
        line, pos, state = self.line, self.pos, self.state
        while pos < end and state != "#":
            char = line[pos]
            if state is None:
                # In YAML "#" opens a comment only after whitespace; in TOML anywhere.
                if char == "#" and (self.fmt == "toml" or pos == 0 or line[pos - 1] in " \t"):
                    state = "#"
                elif char in "\"'":
                    state = char
                elif char in "[{":
                    self.flow += 1
                elif char in "]}":
                    self.flow = max(self.flow - 1, 0)
            elif state == '"':
                if char == "\\":
                    pos += 1
                elif char == '"':
                    state = None
            elif char == "'":
                if self.fmt == "yaml" and line[pos + 1 : pos + 2] == "'":
                    pos += 1
                else:
                    state = None
            pos += 1
        self.pos, self.state = pos, state
        return "[" if state is None and self.flow else state


def _escape(value: str, quote: Optional[str], fmt: str, from_env: bool) -> Optional[str]:
    """*value* as written where *quote* says it goes, or None when it cannot go there. The
    file's own ${VAR:-default} text is its author's syntax, and not checked in unquoted text."""
    if quote == '"':
        return "".join(
            _DOUBLE_QUOTE_ESCAPES.get(c, f"\\u{ord(c):04x}" if _CONTROL.match(c) else c)
            for c in value
        )
    if quote == "'":
        if _CONTROL.search(value) or (fmt == "toml" and "'" in value):
            return None
        return value.replace("'", "''") if fmt == "yaml" else value
    if from_env and (
        _CONTROL.search(value)
        or _BARE_UNSAFE[fmt].search(value)
        or (quote == "[" and _FLOW_UNSAFE.search(value))
    ):
        return None
    return value
