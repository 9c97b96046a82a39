"""Human-readable durations, as klag-exporter writes them: "500ms", "10s", "1m", "1h 30m".

klag-exporter reads these with Rust's humantime, so the same spellings are accepted here:
one or more spans of a number and a unit, optionally separated by spaces. Two choices differ:

- A bare number ("30", or a TOML/YAML number) is rejected: 30 seconds and 30 milliseconds are
  both plausible readings, and guessing wrong makes a poll loop spin or stall.
- Months and years are left out: "1M" next to "1m" is a trap, and no setting here needs them.
  Decimal spans ("1.5s") are accepted as a harmless superset.
"""

from __future__ import annotations

import re
from decimal import Decimal

# Each unit's spellings, and its length in nanoseconds.
_UNITS = (
    (("ns", "nsec"), 1),
    (("us", "µs", "usec"), 10**3),
    (("ms", "msec"), 10**6),
    (("s", "sec", "secs", "second", "seconds"), 10**9),
    (("m", "min", "mins", "minute", "minutes"), 60 * 10**9),
    (("h", "hr", "hrs", "hour", "hours"), 3600 * 10**9),
    (("d", "day", "days"), 86400 * 10**9),
    (("w", "week", "weeks"), 7 * 86400 * 10**9),
)
_NS_PER = {spelling: ns for spellings, ns in _UNITS for spelling in spellings}

_SPAN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([^\s\d.]*)")
# Far beyond any setting (10**20 weeks), and short enough that a sum of spans stays a float.
_MAX_DIGITS = 20
_EXAMPLES = '"500ms", "10s", "1m", "1h 30m"'


def parse_duration(text: str) -> float:
    """Return the duration *text* in seconds, or raise ValueError saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"must be a duration string such as {_EXAMPLES}")
    if not text.strip():
        raise ValueError(f"is empty; expected a duration such as {_EXAMPLES}")
    if text.strip().startswith("-"):
        raise ValueError("is negative; durations count forward from zero")
    total_ns = Decimal(0)
    pos = 0
    end = len(text.rstrip())
    while pos < end:
        match = _SPAN.match(text, pos)
        if match is None:
            raise ValueError(f"is not a duration; expected e.g. {_EXAMPLES}")
        number, unit = match.groups()
        if not unit:
            raise ValueError('has a number without a unit; write e.g. "30s" or "500ms"')
        if unit not in _NS_PER:
            # Not quoted: the text may be a secret put in the wrong place.
            raise ValueError("has an unknown unit; use ms, s, m, h or d")
        if len(number.partition(".")[0]) > _MAX_DIGITS:
            raise ValueError(f"has a number of more than {_MAX_DIGITS} digits")
        total_ns += Decimal(number) * _NS_PER[unit]
        pos = match.end()
    return int(total_ns) / 10**9
