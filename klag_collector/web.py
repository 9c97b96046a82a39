"""HTTP resources: /metrics, /health, /ready and a status page at /.

/metrics and / serve the bytes of the renderer's last pass; /ready reads the pollers'
state when asked. No Kafka call, no rendering, no gzip on the reactor thread.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Sequence, cast

from prometheus_client import exposition
from twisted.internet.interfaces import IReactorTime
from twisted.web import pages, resource
from twisted.web.server import Request

from .config import ReadyRequires
from .poller import ClusterPoller
from .render import OPENMETRICS_TYPE, TEXT_TYPE, MetricsRenderer



class _Leaf(resource.Resource):
    """A leaf that answers only its own path; GET (and so HEAD) only, else 405."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        if any(request.postpath or ()):
            return cast(bytes, pages.notFound().render(request))
        if request.method not in (b"GET", b"HEAD"):
            # twisted.web gives 405 only to the verbs it knows (GET, HEAD, POST) and 501 to
            # PUT, DELETE and the rest; any other verb on a known path is a 405 here.
            request.setHeader(b"allow", b"GET, HEAD")
            page = pages.errorPage(405, "Method Not Allowed", "Only GET and HEAD are allowed here.")
            return cast(bytes, page.render(request))
        return cast(bytes, super().render(request))


def _not_rendered(request: Request, what: bytes) -> bytes:
    request.setResponseCode(503)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return what + b" not rendered yet\n"


class MetricsResource(_Leaf):
    """Serves the latest pre-rendered exposition in the format and encoding asked for."""

    def __init__(self, renderer: MetricsRenderer) -> None:
        super().__init__()
        self._renderer = renderer

    def render_GET(self, request: Request) -> bytes:
        rendered = self._renderer.current
        request.setHeader(b"vary", b"Accept, Accept-Encoding")
        if rendered is None:
            return _not_rendered(request, b"metrics are")
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        _, chosen = exposition.choose_encoder(accept)
        openmetrics = chosen.startswith("application/openmetrics-text")
        encodings = (request.getHeader(b"accept-encoding") or b"").decode("latin-1")
        gzipped = exposition.gzip_accepted(encodings)
        content_type = OPENMETRICS_TYPE if openmetrics else TEXT_TYPE
        request.setHeader(b"content-type", content_type.encode())
        if gzipped:
            request.setHeader(b"content-encoding", b"gzip")
        return rendered.body(openmetrics, gzipped)


class HealthResource(_Leaf):
    """Liveness: answers while the reactor runs, whatever Kafka does."""

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"OK\n"


def cluster_status(poller: ClusterPoller, now: float) -> Dict[str, Any]:
    """One cluster's entry in /ready."""
    health = poller.health
    return {
        "state": poller.state(now),
        "last_success": health.last_success,
        "consecutive_failures": health.consecutive_failures,
        "last_error": health.last_error,
        "next_attempt_in": poller.next_attempt_in(now),
    }


def is_ready(pollers: Sequence[ClusterPoller], requires: ReadyRequires, now: float) -> bool:
    """Ready when any (or, with ReadyRequires.ALL, every) cluster has fresh data."""
    fresh = [poller.fresh_snapshot(now) is not None for poller in pollers]
    return all(fresh) if requires is ReadyRequires.ALL else any(fresh)


class ReadyResource(_Leaf):
    """Readiness with each cluster's state; 200 when ready, else 503.

    Computed when asked: it is a few fields per cluster, and its states must be those of
    the moment even between renders.
    """

    def __init__(
        self, pollers: Sequence[ClusterPoller], requires: ReadyRequires, clock: IReactorTime
    ) -> None:
        super().__init__()
        self._pollers = pollers
        self._requires = requires
        self._clock = clock

    def render_GET(self, request: Request) -> bytes:
        now = self._clock.seconds()
        ready = is_ready(self._pollers, self._requires, now)
        answer = {
            "status": "ready" if ready else "not_ready",
            "clusters": {poller.name: cluster_status(poller, now) for poller in self._pollers},
        }
        request.setResponseCode(200 if ready else 503)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(answer, indent=2).encode() + b"\n"


class StatusPage(_Leaf):
    """The status page, as the last render pass made it (see render.status_page)."""

    def __init__(self, renderer: MetricsRenderer) -> None:
        super().__init__()
        self._renderer = renderer

    def render_GET(self, request: Request) -> bytes:
        rendered = self._renderer.current
        if rendered is None:
            return _not_rendered(request, b"the status page is")
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return rendered.status_page


class Root(resource.Resource):
    """The site root: the known paths, 404 for anything else."""

    def __init__(self, children: Dict[bytes, resource.Resource]) -> None:
        super().__init__()
        for path, child in children.items():
            self.putChild(path, child)

    def getChild(self, path: bytes, request: Request) -> resource.IResource:
        return pages.notFound()


def make_root(
    renderer: MetricsRenderer,
    pollers: Sequence[ClusterPoller],
    ready_requires: ReadyRequires,
    clock: IReactorTime,
) -> Root:
    """The exporter's whole HTTP tree."""
    return Root(
        {
            b"": StatusPage(renderer),
            b"metrics": MetricsResource(renderer),
            b"health": HealthResource(),
            b"ready": ReadyResource(pollers, ready_requires, clock),
        }
    )
