"""Exposition bytes rendered once per change, in a worker thread, served as they are.

Rendering 20k series costs ~100 ms in prometheus_client; serving cached bytes ~1 ms. So
each snapshot swap triggers one render of every variant (text and OpenMetrics, plain
and gzipped) and scrapes only pick the right bytes.

Only families whose samples carry no timestamp, exemplar or histogram data are rendered
here, which is all this exporter makes; tests hold the bytes equal to prometheus_client's.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from twisted.internet import defer
from twisted.logger import Logger

# The classic text format; prometheus_client's newer default names version 1.0.0, which
# Prometheus 2.x servers do not recognise.
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = openmetrics.CONTENT_TYPE_LATEST
# Level 6 gives nearly all of level 9's saving on this repetitive text at a third of the cost.
GZIP_LEVEL = 6

log = Logger()


@dataclass(frozen=True, slots=True)
class Rendered:
    """One render of the registry: body bytes per (openmetrics, gzip) variant."""

    bodies: Dict[Tuple[bool, bool], bytes]

    def body(self, openmetrics_format: bool, gzipped: bool) -> bytes:
        """The bytes of one variant."""
        return self.bodies[(openmetrics_format, gzipped)]


def _escape_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
    return value


def _sample_lines(family: Metric) -> str:
    # The same bytes as prometheus_client writes for a sample without timestamp or exemplar,
    # in both formats: labels sorted, values escaped, the value as Go prints a float.
    lines = []
    for sample in family.samples:
        labels = ",".join(
            f'{name}="{_escape_value(value)}"' for name, value in sorted(sample.labels.items())
        )
        labels = "{" + labels + "}" if labels else ""
        lines.append(f"{sample.name}{labels} {floatToGoString(sample.value)}\n")
    return "".join(lines)


def render(registry: Collector) -> Rendered:
    """Render every variant; blocking, so it runs in a worker thread.

    Byte for byte what prometheus_client's two generate_latest functions write for our
    families (gauges and counters with plain samples), but each sample line is built once
    and shared by both formats, which only differ in their headers.
    """
    text: List[str] = []
    om: List[str] = []
    for family in registry.collect():
        lines = _sample_lines(family)
        text_name = family.name + "_total" if family.type == "counter" else family.name
        text_help = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        text.append(f"# HELP {text_name} {text_help}\n# TYPE {text_name} {family.type}\n")
        text.append(lines)
        om.append(f"# HELP {family.name} {_escape_value(family.documentation)}\n")
        om.append(f"# TYPE {family.name} {family.type}\n")
        om.append(lines)
    om.append("# EOF\n")
    text_bytes = "".join(text).encode()
    om_bytes = "".join(om).encode()
    return Rendered(
        {
            (False, False): text_bytes,
            (False, True): gzip.compress(text_bytes, GZIP_LEVEL, mtime=0),
            (True, False): om_bytes,
            (True, True): gzip.compress(om_bytes, GZIP_LEVEL, mtime=0),
        }
    )


class MetricsRenderer:
    """Keeps the latest Rendered; `invalidate()` asks for a new one, coalescing bursts."""

    def __init__(
        self, registry: Collector, run_in_thread: Callable[..., "defer.Deferred[Any]"]
    ) -> None:
        self.registry = registry
        self._run = run_in_thread
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
        d = self._run(render, self.registry)
        d.addCallbacks(self._done, self._failed)

    def when_rendered(self) -> "defer.Deferred[None]":
        """Fires once every change so far is in `current`."""
        d: defer.Deferred[None] = defer.Deferred()
        if self._busy:
            self._waiters.append(d)
        else:
            d.callback(None)
        return d

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
        for d in waiters:
            d.callback(None)
