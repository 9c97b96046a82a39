"""What is served from the snapshots, rendered once per change in a worker thread.

Rendering 20k series costs ~100 ms in prometheus_client; serving cached bytes ~1 ms. So
each change triggers one render pass, which makes every /metrics variant (text and
OpenMetrics, plain and gzipped) and the status page; requests only pick bytes.

A pass renders per cluster and merges. A cluster's lag lines are built once per snapshot
and kept until the next snapshot, or until it turns stale; its health lines, a dozen, are
built in every pass. So a change of health alone (a skipped tick, the stale timer) costs
the health families, the merge and the gzip, not every cluster's lag lines again.

Only families whose samples carry no timestamp, exemplar or histogram data are rendered
here, which is all this exporter makes; tests hold the bytes equal to prometheus_client's.
"""

from __future__ import annotations

import gzip
import html
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from . import __version__, metrics
from .collector import ClusterReport, read_clusters
from .families import Families, empty_family
from .poller import ClusterPoller, ClusterSnapshot

# The classic text format; prometheus_client's newer default names version 1.0.0, which
# Prometheus 2.x servers do not recognise.
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = openmetrics.CONTENT_TYPE_LATEST
# Level 6 gives nearly all of level 9's saving on this repetitive text at a third of the cost.
GZIP_LEVEL = 6
# Rows in the status page's "most lag" table.
TOP_GROUPS = 10

log = Logger()


class Variant(NamedTuple):
    """One of the four /metrics bodies: which format, and whether it is gzipped."""

    openmetrics: bool
    gzipped: bool


@dataclass(frozen=True, slots=True)
class Rendered:
    """One render pass: the /metrics body of each variant, and the status page."""

    bodies: Mapping[Variant, bytes]
    status_page: bytes

    def body(self, openmetrics_format: bool, gzipped: bool) -> bytes:
        """The bytes of one variant."""
        return self.bodies[Variant(openmetrics_format, gzipped)]


# -- the exposition -------------------------------------------------------------------


def _escape_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
    return value


def sample_lines(family: Metric) -> bytes:
    """A family's sample lines, which both formats write alike (they differ in headers)."""
    # prometheus_client's bytes for a sample without timestamp or exemplar: labels sorted,
    # values escaped, the value as Go prints a float.
    lines = []
    for sample in family.samples:
        labels = ",".join(
            f'{name}="{_escape_value(value)}"' for name, value in sorted(sample.labels.items())
        )
        labels = "{" + labels + "}" if labels else ""
        lines.append(f"{sample.name}{labels} {floatToGoString(sample.value)}\n")
    return "".join(lines).encode()


# Sample lines per family name: one cluster's lag families, or its health families.
FamilyLines = Mapping[str, bytes]


def lines_by_family(families: Families) -> Dict[str, bytes]:
    """The sample lines of each family."""
    return {name: sample_lines(family) for name, family in families.items()}


class FamilyHeader(NamedTuple):
    """A family's HELP and TYPE lines in each format, and the key of its lines."""

    # Its key in Families and FamilyLines: the metric's defined name (counters end in _total).
    key: str
    text: bytes
    openmetrics: bytes


def family_header(family: Metric, key: str) -> FamilyHeader:
    """The headers both prometheus_client encoders write for `family`, keyed by `key`."""
    # The text format names a counter with its _total and escapes no quote in HELP.
    text_name = family.name + "_total" if family.type == "counter" else family.name
    text_help = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    om_help = _escape_value(family.documentation)
    return FamilyHeader(
        key,
        f"# HELP {text_name} {text_help}\n# TYPE {text_name} {family.type}\n".encode(),
        f"# HELP {family.name} {om_help}\n# TYPE {family.name} {family.type}\n".encode(),
    )


def merge_bodies(
    headers: Sequence[FamilyHeader], parts: Sequence[FamilyLines]
) -> Dict[Variant, bytes]:
    """Every variant: each family once, in `headers` order, with its lines from every part.

    The text format allows a family name only once, so the clusters' lines are joined under
    one header; a family without a line is left out, as families.merge() leaves it out.
    """
    text: List[bytes] = []
    om: List[bytes] = []
    for header in headers:
        lines = [part[header.key] for part in parts if part.get(header.key)]
        if lines:
            text.append(header.text)
            text.extend(lines)
            om.append(header.openmetrics)
            om.extend(lines)
    om.append(b"# EOF\n")
    text_body, om_body = b"".join(text), b"".join(om)
    return {
        Variant(openmetrics=False, gzipped=False): text_body,
        Variant(openmetrics=False, gzipped=True): gzip.compress(text_body, GZIP_LEVEL, mtime=0),
        Variant(openmetrics=True, gzipped=False): om_body,
        Variant(openmetrics=True, gzipped=True): gzip.compress(om_body, GZIP_LEVEL, mtime=0),
    }


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
    lines: Dict[str, bytes]


class ReportRenderer:
    """Renders clusters' reports; keeps each cluster's lag lines while its snapshot lasts.

    Passes must not overlap (MetricsRenderer runs one at a time), so the kept lines need
    no lock.
    """

    def __init__(self, definitions: Sequence[metrics.MetricDef]) -> None:
        self._headers = [
            family_header(empty_family(definition), definition.name) for definition in definitions
        ]
        self._lag_lines: Dict[str, _LagLines] = {}

    def render(self, reports: Sequence[ClusterReport]) -> Rendered:
        """One pass over `reports`, in their order; blocking, so it runs in a worker thread."""
        parts: List[FamilyLines] = []
        for report in reports:
            parts.append(lines_by_family(report.health_families()))
            lag_lines = self._lag_lines_of(report)
            if lag_lines is not None:
                parts.append(lag_lines)
        return Rendered(merge_bodies(self._headers, parts), status_page(reports))

    def _lag_lines_of(self, report: ClusterReport) -> Optional[Dict[str, bytes]]:
        if report.snapshot is None:
            # Stale, or never collected: its lines leave /metrics, and memory.
            self._lag_lines.pop(report.name, None)
            return None
        kept = self._lag_lines.get(report.name)
        if kept is None or kept.snapshot is not report.snapshot:
            kept = _LagLines(report.snapshot, lines_by_family(report.snapshot.families))
            self._lag_lines[report.name] = kept
        return kept.lines


class MetricsRenderer:
    """Keeps the latest Rendered; `invalidate()` asks for a new one, coalescing bursts."""

    def __init__(
        self,
        pollers: Sequence[ClusterPoller],
        granularity: metrics.Granularity,
        clock: IReactorTime,
        run_in_thread: Callable[..., "defer.Deferred[Any]"],
    ) -> None:
        self._pollers = pollers
        self._clock = clock
        self._run = run_in_thread
        self._reports = ReportRenderer(metrics.families_for(granularity))
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
        rendering.addCallback(partial(self._run, self._reports.render))
        rendering.addCallbacks(self._done, self._failed)

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
