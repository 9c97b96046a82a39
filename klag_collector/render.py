"""What is served from the snapshots, rendered once per change in a worker thread.

Rendering 65k series costs ~2 s in prometheus_client; serving kept bytes ~1 ms. So each
change triggers one render pass, which writes the sample lines that changed and the status
page, and makes the /metrics bodies the last pass was asked for (Prometheus asks for one:
OpenMetrics, gzipped); another variant is made the first time it is asked for, off the
reactor, and kept with the pass. Requests only pick bytes.

A pass renders per cluster and merges. A cluster's lag lines are written once per snapshot
and kept until the next snapshot, or until it turns stale; a family whose rows equal those
of the last snapshot keeps its lines, so a steady cycle writes again only what moved. A
cluster's health lines, a dozen, are written in every pass.

Lines are written straight from the families' rows (see families.Family), byte for byte
as prometheus_client writes samples without timestamp or exemplar, which is all this
exporter makes; tests hold the bytes equal to prometheus_client's.
"""

from __future__ import annotations

import functools
import html
import itertools
import math
import operator
import re
import threading
from typing import (
    AbstractSet, Any, Callable, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional,
    Sequence, Set, Tuple,
)

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from . import __version__, gzip_pieces, metrics
from .collector import ClusterReport, read_clusters
from .families import Families, Family, LabelValues, empty_family
from .gzip_pieces import Piece
from .poller import ClusterPoller, ClusterSnapshot
from .scrape_gate import Pause, never_pause, paced

# The classic text format; prometheus_client's newer default names version 1.0.0, which
# Prometheus 2.x servers do not recognise.
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = openmetrics.CONTENT_TYPE_LATEST
# Rows in the status page's "most lag" table.
TOP_GROUPS = 10

log = Logger()


class Variant(NamedTuple):
    """One of the four /metrics bodies: which format, and whether it is gzipped."""

    openmetrics: bool
    gzipped: bool


class Rendered:
    """One render pass: the status page, and the /metrics body of each variant, made the
    first time it is asked for (or beforehand, for the variants the last pass was asked for).

    A body is made from the kept lines, which are kept deflated: the gzipped body joins them,
    the plain one inflates them. `body()` blocks, so it runs in a worker thread; `ready()` only
    looks, for the reactor.
    """

    def __init__(self, headers: Sequence["FamilyHeader"], parts: Sequence["FamilyLines"],
                 status_page: bytes) -> None:
        self.status_page = status_page
        self._headers = headers
        self._parts = parts
        self._bodies: Dict[Variant, bytes] = {}
        self._lock = threading.Lock()
        # The variants asked for so far: the next pass makes them before it is served.
        self.asked: Set[Variant] = set()

    @property
    def made(self) -> Set[Variant]:
        """The variants whose body is made."""
        return set(self._bodies)

    def ready(self, variant: Variant) -> Optional[bytes]:
        """The body of *variant* if it is made already, else None; counts it as asked."""
        self.asked.add(variant)
        return self._bodies.get(variant)

    def body(self, variant: Variant) -> bytes:
        """The body of *variant*, made now if it is not yet (blocking: a worker thread)."""
        self.asked.add(variant)
        with self._lock:
            made = self._bodies.get(variant)
            if made is None:
                made = self._make(variant)
                self._bodies[variant] = made
            return made

    def _make(self, variant: Variant) -> bytes:
        pieces = body_pieces(self._headers, self._parts, variant.openmetrics)
        if variant.gzipped:
            return gzip_pieces.gzip_body(pieces)
        return b"".join(gzip_pieces.inflate(pieces))


# -- the exposition -------------------------------------------------------------------


def _escape_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
    return value


def _line_format(family: Family) -> Tuple[str, Tuple[int, ...]]:
    """A %-format of the family's sample lines, and which label value of a row fills each
    of its %s in turn (the value itself fills the last)."""
    # prometheus_client writes a sample's labels sorted by name, values escaped; the
    # cluster's labels are the same in every line, so they are written into the format.
    names = [name for name, _ in family.base] + list(family.definition.labels)
    fixed = {i: _escape_value(value).replace("%", "%%") for i, (_, value) in enumerate(family.base)}
    pairs: List[str] = []
    positions: List[int] = []
    for i in sorted(range(len(names)), key=names.__getitem__):
        if i in fixed:
            pairs.append(f'{names[i]}="{fixed[i]}"')
        else:
            pairs.append(f'{names[i]}="%s"')
            positions.append(i - len(family.base))
    labels = "{" + ",".join(pairs) + "}" if pairs else ""
    return f"{family.definition.name}{labels} %s\n", tuple(positions)


# Go's float formatting of a value, remembered: most values (offsets, lags, counts) recur.
_remembered_number = functools.lru_cache(maxsize=1 << 16)(floatToGoString)


def _number(value: float) -> str:
    # 0.0 and -0.0 are one key to a cache, but they are written apart.
    return str(_remembered_number(value) if value else floatToGoString(value))


# Below it, Go writes every finite value as Python's repr does; from it on, with an exponent.
_GO_EXPONENT_FROM = 1e6


def numbers(values: Sequence[float]) -> Iterable[str]:
    """Each value written as Go (and so prometheus_client) writes it."""
    # Lags, counts and seconds are mostly small: then repr is one C call per value, faster
    # than a look-up in the cache.
    if values and all(map(math.isfinite, values)) and max(values) < _GO_EXPONENT_FROM:
        return map(repr, values)
    return map(_number, values)


_NEEDS_ESCAPE = re.compile(r'[\\\n"]')


# Rows written at a time. A family's lines made in one go held the GIL for one join and one
# encode of all its rows, 5-15 ms at 60k rows, and a scrape waited that long. Between chunks
# the render pauses while a scrape is answered (scrape_gate): at 2,048 rows a chunk took
# ~1 ms, and a scrape during a render p50 0.99 ms, p99 2.8; at 512, 0.83 and 2.0 (10k rows).
CHUNK_ROWS = 512


def line_chunks(family: Family) -> Iterator[bytes]:
    """A family's sample lines, CHUNK_ROWS rows at a time; both formats write them alike
    (they differ in headers)."""
    line, positions = _line_format(family)
    values = family.values
    for start in range(0, len(values), CHUNK_ROWS):
        written = numbers(values[start:start + CHUNK_ROWS])
        if not positions:
            yield "".join([line % number for number in written]).encode()
            continue
        picked = _label_values(family.labels[start:start + CHUNK_ROWS], positions)
        yield "".join([line % (*row, number) for row, number in zip(picked, written)]).encode()


def _label_values(rows: Sequence[LabelValues], positions: Tuple[int, ...]) -> List[LabelValues]:
    """The label values each line writes, in its format's order, escaped."""
    pick = operator.itemgetter(*positions)
    picked: List[LabelValues]
    picked = [(pick(row),) for row in rows] if len(positions) == 1 else [pick(row) for row in rows]
    # One look over the chunk's label values: escaping is needed only where one has \, " or \n.
    if _NEEDS_ESCAPE.search("".join(itertools.chain.from_iterable(picked))):
        picked = [tuple(_escape_value(v) for v in row) for row in picked]
    return picked


# Sample lines per family name, deflated: one cluster's lag families, or its health families.
FamilyLines = Mapping[str, Piece]


def family_lines(family: Family, pause: Pause = never_pause) -> Piece:
    """A family's sample lines, deflated; *pause* is called before each chunk."""
    return gzip_pieces.deflate_chunks(paced(line_chunks(family), pause))


def lines_by_family(families: Families, pause: Pause = never_pause) -> Dict[str, Piece]:
    """The deflated sample lines of each family."""
    return {name: family_lines(family, pause) for name, family in families.items()}


class FamilyHeader(NamedTuple):
    """A family's HELP and TYPE lines in each format, deflated, and the key of its lines."""

    # Its key in Families and FamilyLines: the metric's defined name (counters end in _total).
    key: str
    text: Piece
    openmetrics: Piece


def family_header(family: Metric, key: str) -> FamilyHeader:
    """The headers both prometheus_client encoders write for `family`, keyed by `key`."""
    # The text format names a counter with its _total and escapes no quote in HELP.
    text_name = family.name + "_total" if family.type == "counter" else family.name
    text_help = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    om_help = _escape_value(family.documentation)
    return FamilyHeader(
        key,
        gzip_pieces.deflate(f"# HELP {text_name} {text_help}\n# TYPE {text_name} {family.type}\n".encode()),
        gzip_pieces.deflate(f"# HELP {family.name} {om_help}\n# TYPE {family.name} {family.type}\n".encode()),
    )


_EOF = gzip_pieces.deflate(b"# EOF\n")


def body_pieces(
    headers: Sequence[FamilyHeader], parts: Sequence[FamilyLines], openmetrics_format: bool
) -> List[Piece]:
    """One body's pieces, in order: each family once, in `headers` order, with its lines from
    every part.

    The text format allows a family name only once, so the clusters' lines are joined under
    one header; a family without a line is left out, as families.merge() leaves it out.
    """
    out: List[Piece] = []
    for header in headers:
        lines = [piece for piece in (part.get(header.key, gzip_pieces.EMPTY) for part in parts)
                 if piece.size]
        if lines:
            out.append(header.openmetrics if openmetrics_format else header.text)
            out.extend(lines)
    if openmetrics_format:
        out.append(_EOF)
    return out


# -- the status page ------------------------------------------------------------------


class _LaggingGroup(NamedTuple):
    max_lag_seconds: Optional[float]
    sum_lag: int
    cluster: str
    group: str


def _lag_order(row: _LaggingGroup) -> Tuple[float, int, str, str]:
    # Unknown time lag sorts below every known one (and shows as "-", never as 0.0).
    seconds = -1.0 if row.max_lag_seconds is None else row.max_lag_seconds
    return (seconds, row.sum_lag, row.cluster, row.group)


def _most_lagging(reports: Sequence[ClusterReport]) -> List[_LaggingGroup]:
    rows = [
        _LaggingGroup(group.max_lag_seconds, group.sum_lag, report.name, group.group)
        for report in reports
        if report.snapshot is not None
        for group in report.snapshot.view.groups
        if group.sum_lag is not None
    ]
    rows.sort(key=_lag_order, reverse=True)
    return rows[:TOP_GROUPS]


def _seconds_cell(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds:.1f}"


def status_page(reports: Sequence[ClusterReport]) -> bytes:
    """A small HTML page for a person: version, cluster states, the most lagging groups."""
    escape = html.escape
    states = "".join(
        f"<tr><td>{escape(report.name)}</td><td>{escape(report.state)}</td>"
        f"<td>{escape(report.health.last_error)}</td></tr>"
        for report in reports
    )
    lag_rows = "".join(
        f"<tr><td>{escape(row.cluster)}</td><td>{escape(row.group)}</td><td>{row.sum_lag}</td>"
        f"<td>{_seconds_cell(row.max_lag_seconds)}</td></tr>"
        for row in _most_lagging(reports)
    )
    # Relative links, so the page still works when a host daemon mounts it under a sub-path.
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>klag-collector</title></head>
<body><h1>klag-collector {escape(__version__)}</h1>
<h2>Clusters</h2>
<table border="1"><tr><th>cluster</th><th>state</th><th>last error</th></tr>{states}</table>
<h2>Most lagging groups</h2>
<table border="1"><tr><th>cluster</th><th>group</th><th>sum lag</th><th>max lag (s)</th></tr>{lag_rows}</table>
<p><a href="metrics">metrics</a> <a href="health">health</a> <a href="ready">ready</a></p>
</body></html>
"""
    return page.encode()


# -- render passes ----------------------------------------------------------------------


class _LagLines(NamedTuple):
    snapshot: ClusterSnapshot
    lines: Dict[str, Piece]


# What a pass makes before it is served when nothing was asked yet: what Prometheus asks.
FIRST_VARIANTS = frozenset({Variant(openmetrics=True, gzipped=True)})


class ReportRenderer:
    """Renders clusters' reports; keeps each cluster's lag lines while its snapshot lasts.

    A new snapshot's family whose rows equal the last snapshot's keeps its lines: in a
    steady cycle only what moved (time lag, lag) is written again.
    Passes must not overlap (MetricsRenderer runs one at a time), so the kept lines need
    no lock.
    """

    def __init__(self, definitions: Sequence[metrics.MetricDef],
                 pause: Pause = never_pause) -> None:
        # Called between chunks of lines: a scrape being answered goes first (scrape_gate).
        self._pause = pause
        self._headers = [
            family_header(empty_family(definition), definition.name) for definition in definitions
        ]
        self._lag_lines: Dict[str, _LagLines] = {}

    def render(self, reports: Sequence[ClusterReport],
               variants: AbstractSet[Variant] = FIRST_VARIANTS) -> Rendered:
        """One pass over `reports`, in their order, making the bodies of *variants*;
        blocking, so it runs in a worker thread."""
        parts: List[FamilyLines] = []
        for report in reports:
            parts.append(lines_by_family(report.health_families(), self._pause))
            lag_lines = self._lag_lines_of(report)
            if lag_lines is not None:
                parts.append(lag_lines)
        # A cluster gone from the reports (a reload removed it) leaves memory too.
        for name in set(self._lag_lines) - {report.name for report in reports}:
            del self._lag_lines[name]
        rendered = Rendered(self._headers, parts, status_page(reports))
        for variant in sorted(variants):
            rendered.body(variant)
        rendered.asked.clear()
        return rendered

    def _lag_lines_of(self, report: ClusterReport) -> Optional[Dict[str, Piece]]:
        if report.snapshot is None:
            # Stale, or never collected: its lines leave /metrics, and memory.
            self._lag_lines.pop(report.name, None)
            return None
        kept = self._lag_lines.get(report.name)
        if kept is None or kept.snapshot is not report.snapshot:
            lines = _lines_keeping(report.snapshot.families, kept, self._pause)
            kept = _LagLines(report.snapshot, lines)
            self._lag_lines[report.name] = kept
        return kept.lines


def _lines_keeping(families: Families, kept: Optional[_LagLines], pause: Pause) -> Dict[str, Piece]:
    """The lines of *families*, reusing those of the kept snapshot's equal families."""
    if kept is None:
        return lines_by_family(families, pause)
    old = kept.snapshot.families
    return {
        name: kept.lines[name] if name in old and _same_rows(old[name], family)
        else family_lines(family, pause)
        for name, family in families.items()
    }


def _same_rows(old: Family, new: Family) -> bool:
    """old == new, compared CHUNK_ROWS rows at a time, as the lines are written."""
    if (old.definition, old.base, len(old.values)) != (new.definition, new.base, len(new.values)):
        return False
    return all(old.values[start:start + CHUNK_ROWS] == new.values[start:start + CHUNK_ROWS]
               and old.labels[start:start + CHUNK_ROWS] == new.labels[start:start + CHUNK_ROWS]
               for start in range(0, len(new.values), CHUNK_ROWS))


class MetricsRenderer:
    """Keeps the latest Rendered; `invalidate()` asks for a new one, coalescing bursts."""

    def __init__(
        self,
        pollers: Sequence[ClusterPoller],
        granularity: metrics.Granularity,
        clock: IReactorTime,
        run_in_thread: Callable[..., "defer.Deferred[Any]"],
        pause: Pause = never_pause,
    ) -> None:
        self._pollers = pollers
        self._clock = clock
        self._run = run_in_thread
        self._reports = ReportRenderer(metrics.families_for(granularity), pause)
        self.current: Optional[Rendered] = None
        self._busy = False
        self._dirty = False
        self._waiters: "list[defer.Deferred[None]]" = []

    def invalidate(self) -> None:
        """The data changed: render again (after the render under way, if any)."""
        if self._busy:
            self._dirty = True
            return
        self._busy = True
        self._dirty = False
        # The reports are read here, on the reactor thread where cycles swap snapshots, so
        # a pass sees one moment; that is a few references per cluster, no row.
        rendering = defer.maybeDeferred(read_clusters, self._pollers, self._clock.seconds())
        # What the last pass was asked for; if no one asked (polls faster than scrapes),
        # what it made.
        last = self.current
        wanted = frozenset(last.asked or last.made) if last is not None else frozenset()
        wanted = wanted or FIRST_VARIANTS
        rendering.addCallback(lambda reports: self._run(self._reports.render, reports, wanted))
        rendering.addCallbacks(self._done, self._failed)

    def make(self, rendered: Rendered, variant: Variant) -> "defer.Deferred[bytes]":
        """The body of *variant* of *rendered*, made off the reactor if it is not yet."""
        return self._run(rendered.body, variant)

    def when_rendered(self) -> "defer.Deferred[None]":
        """Fires once every change so far is in `current`."""
        waiting: defer.Deferred[None] = defer.Deferred()
        if self._busy:
            self._waiters.append(waiting)
        else:
            waiting.callback(None)
        return waiting

    def _done(self, rendered: Rendered) -> None:
        self.current = rendered
        self._finish()

    def _failed(self, failure: Any) -> None:
        log.failure("rendering /metrics failed; serving the previous render", failure)
        self._finish()

    def _finish(self) -> None:
        self._busy = False
        if self._dirty:
            self.invalidate()
            return
        waiters, self._waiters = self._waiters, []
        for waiting in waiters:
            waiting.callback(None)
