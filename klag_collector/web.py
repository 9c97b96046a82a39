"""HTTP resources: /metrics, /health, /ready and a status page at /.

All answers come from state the pollers and the renderer already hold: no Kafka call,
no rendering, no gzip on the reactor thread.
"""

from __future__ import annotations

import html
import json
from typing import Any, Dict, Sequence

from prometheus_client import exposition
from twisted.internet.interfaces import IReactorTime
from twisted.web import pages, resource
from twisted.web.server import Request

from . import __version__
from .poller import ClusterPoller
from .render import OPENMETRICS_TYPE, TEXT_TYPE, MetricsRenderer

READY_ANY, READY_ALL = "any", "all"


class _Leaf(resource.Resource):
    """A leaf that answers only its own path; GET (and so HEAD) only, else 405."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        if any(request.postpath):
            return pages.notFound().render(request)
        if request.method not in (b"GET", b"HEAD"):
            # twisted.web gives 405 only to the verbs it knows (GET, HEAD, POST) and 501 to
            # PUT, DELETE and the rest; any other verb on a known path is a 405 here.
            request.setHeader(b"allow", b"GET, HEAD")
            page = pages.errorPage(405, "Method Not Allowed", "Only GET and HEAD are allowed here.")
            return page.render(request)
        return super().render(request)


class MetricsResource(_Leaf):
    """Serves the latest pre-rendered exposition in the format and encoding asked for."""

    def __init__(self, renderer: MetricsRenderer) -> None:
        super().__init__()
        self.renderer = renderer

    def render_GET(self, request: Request) -> bytes:
        rendered = self.renderer.current
        request.setHeader(b"vary", b"Accept, Accept-Encoding")
        if rendered is None:
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"metrics are not rendered yet\n"
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        _, chosen = exposition.choose_encoder(accept)
        om = chosen.startswith("application/openmetrics-text")
        encoding = (request.getHeader(b"accept-encoding") or b"").decode("latin-1")
        gz = exposition.gzip_accepted(encoding)
        request.setHeader(b"content-type", (OPENMETRICS_TYPE if om else TEXT_TYPE).encode())
        if gz:
            request.setHeader(b"content-encoding", b"gzip")
        return rendered.body(om, gz)


class HealthResource(_Leaf):
    """Liveness: answers while the reactor runs, whatever Kafka does."""

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"OK\n"


def cluster_status(poller: ClusterPoller, now: float) -> Dict[str, Any]:
    """One cluster's entry in /ready."""
    h = poller.health
    return {
        "state": poller.state(now),
        "last_success": h.last_success,
        "consecutive_failures": h.consecutive_failures,
        "last_error": h.last_error,
        "next_attempt_in": poller.next_attempt_in(now),
    }


def is_ready(pollers: Sequence[ClusterPoller], requires: str, now: float) -> bool:
    """Ready when any (or, with requires="all", every) cluster has fresh data."""
    fresh = [p.is_fresh(now) for p in pollers]
    return all(fresh) if requires == READY_ALL else any(fresh)


class ReadyResource(_Leaf):
    """Readiness with each cluster's state; 200 when ready, else 503."""

    def __init__(
        self, pollers: Sequence[ClusterPoller], requires: str, clock: IReactorTime
    ) -> None:
        super().__init__()
        self.pollers = pollers
        self.requires = requires
        self.clock = clock

    def render_GET(self, request: Request) -> bytes:
        now = self.clock.seconds()
        ready = is_ready(self.pollers, self.requires, now)
        body = {
            "status": "ready" if ready else "not_ready",
            "clusters": {p.name: cluster_status(p, now) for p in self.pollers},
        }
        request.setResponseCode(200 if ready else 503)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body, indent=2).encode() + b"\n"


# Rows in the status page's "most lag" table.
TOP_GROUPS = 10


class StatusPage(_Leaf):
    """A small HTML page for a person: version, cluster states, the most lagging groups."""

    def __init__(self, pollers: Sequence[ClusterPoller], clock: IReactorTime) -> None:
        super().__init__()
        self.pollers = pollers
        self.clock = clock

    def render_GET(self, request: Request) -> bytes:
        now = self.clock.seconds()
        e = html.escape
        states = "".join(
            f"<tr><td>{e(p.name)}</td><td>{e(p.state(now))}</td>"
            f"<td>{e(p.health.last_error)}</td></tr>"
            for p in self.pollers
        )
        rows = []
        for p in self.pollers:
            snap = p.fresh_snapshot(now)
            if snap is None:
                continue
            for g in snap.view.groups:
                if g.sum_lag is not None:
                    rows.append((g.max_lag_seconds, g.sum_lag, p.name, g.group))
        # Unknown time lag sorts below every known one and shows as "-", never as 0.0.
        rows.sort(key=lambda r: (-1.0 if r[0] is None else r[0],) + r[1:], reverse=True)
        lag_rows = "".join(
            f"<tr><td>{e(c)}</td><td>{e(g)}</td><td>{s}</td>"
            f"<td>{'-' if secs is None else f'{secs:.1f}'}</td></tr>"
            for secs, s, c, g in rows[:TOP_GROUPS]
        )
        # Relative links, so the page still works when a host daemon mounts it under a sub-path.
        page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>klag-collector</title></head>
<body><h1>klag-collector {e(__version__)}</h1>
<h2>Clusters</h2>
<table border="1"><tr><th>cluster</th><th>state</th><th>last error</th></tr>{states}</table>
<h2>Most lagging groups</h2>
<table border="1"><tr><th>cluster</th><th>group</th><th>sum lag</th><th>max lag (s)</th></tr>{lag_rows}</table>
<p><a href="metrics">metrics</a> <a href="health">health</a> <a href="ready">ready</a></p>
</body></html>
"""
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return page.encode()


class Root(resource.Resource):
    """The site root: the known paths, 404 for anything else."""

    def __init__(self, children: Dict[bytes, resource.Resource]) -> None:
        super().__init__()
        for path, child in children.items():
            self.putChild(path, child)

    def getChild(self, path: bytes, request: Request) -> resource.Resource:
        return pages.notFound()


def make_root(
    renderer: MetricsRenderer,
    pollers: Sequence[ClusterPoller],
    ready_requires: str,
    clock: IReactorTime,
) -> Root:
    """The exporter's whole HTTP tree."""
    return Root(
        {
            b"": StatusPage(pollers, clock),
            b"metrics": MetricsResource(renderer),
            b"health": HealthResource(),
            b"ready": ReadyResource(pollers, ready_requires, clock),
        }
    )
