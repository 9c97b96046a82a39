"""An existing Twisted daemon that embeds klag-collector.

The host has its own web resource (a page at / and its own /health), and adds the
exporter's service to its own service tree:

- by default the exporter opens no port of its own; the host's Site on --port serves the
  exporter's /metrics and /ready, and its whole HTTP tree (status page too) under /klag/;
- with --exporter-port M the exporter also serves its own Site on port M.

    python contrib/embed_example.py -c config.toml --port 8080 [--exporter-port 8000]

    curl http://127.0.0.1:8080/            # the host's page
    curl http://127.0.0.1:8080/metrics     # the exporter's metrics, served by the host
    curl http://127.0.0.1:8080/klag/ready  # the exporter's readiness

SIGTERM or SIGINT stops both gracefully (the exporter stops polling and closes its Kafka
clients) and the process exits 0. The exporter's Collector (`klag.collector`) can also be
registered in a CollectorRegistry of the host's own, if the host already serves one.

Only the embedding API is used: make_service() and, of the service it returns,
`root`, `metrics_resource()` and the IService methods.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from twisted.application import service, strports
from twisted.internet import endpoints
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web import resource, static
from twisted.web.server import Request, Site

try:
    import klag_collector  # noqa: F401
except ImportError:  # run from a source checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from klag_collector.config import load_config
from klag_collector.errors import ConfigError
from klag_collector.service import make_service

log = Logger(namespace="host")


class HostPage(resource.Resource):
    """The host daemon's own page: stands for whatever the host already serves."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"host daemon: see /metrics for Kafka consumer lag, /klag/ for the exporter\n"


class ExporterPath(resource.Resource):
    """One path of the exporter's tree (`klag.root`), served where the host wants it.

    It asks the tree for that child through IResource, as twisted.web itself would.
    """

    isLeaf = True

    def __init__(self, tree: resource.IResource, path: bytes) -> None:
        super().__init__()
        self._tree = tree
        self._path = path

    def render(self, request: Request) -> bytes:
        return self._tree.getChildWithDefault(self._path, request).render(request)


def make_host(config_path: str, port: int, host: str, exporter_port: Optional[int],
              reactor: object) -> service.MultiService:
    """The host's service tree: its web site, and the klag-collector service inside it."""
    config = load_config(config_path)
    top = service.MultiService()

    if exporter_port is None:
        klag = make_service(config, reactor, serve_http=False)
    else:
        own = endpoints.TCP4ServerEndpoint(reactor, exporter_port, interface=host)
        klag = make_service(config, reactor, endpoint=own)
    klag.setServiceParent(top)

    root = resource.Resource()
    root.putChild(b"", HostPage())
    root.putChild(b"health", static.Data(b"host OK\n", "text/plain; charset=utf-8"))
    # The exporter's resources, mounted where the host wants them: its pre-rendered
    # /metrics, its /ready, and its whole tree (status page too) under /klag/.
    root.putChild(b"metrics", klag.metrics_resource())
    root.putChild(b"ready", ExporterPath(klag.root, b"ready"))
    root.putChild(b"klag", klag.root)
    strports.service(f"tcp:{port}:interface={host}", Site(root)).setServiceParent(top)
    return top


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the host daemon until SIGTERM or SIGINT."""
    p = argparse.ArgumentParser(description="A Twisted daemon embedding klag-collector.")
    p.add_argument("-c", "--config", required=True, help="klag-collector TOML or YAML config")
    p.add_argument("--port", type=int, required=True, help="the host's HTTP port")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--exporter-port", type=int, help="also serve the exporter's own Site here")
    args = p.parse_args(argv)

    from twisted.internet import reactor

    try:
        top = make_host(args.config, args.port, args.host, args.exporter_port, reactor)
    except ConfigError as e:
        print(f"embed_example: {e}", file=sys.stderr)
        sys.exit(2)

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    reactor.callWhenRunning(top.startService)  # type: ignore[attr-defined]
    # The reactor waits for the Deferred stopService returns before it exits.
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)  # type: ignore[attr-defined]
    log.info("host daemon on http://{host}:{port}/", host=args.host, port=args.port)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
