"""A self-contained demo: local Kafka + the test stack's traffic + the exporter.

    python -m klag_collector.demo [--port 8000] [--speed 1] [--dir DIR] [--minutes N]

It starts a single-node Kafka from Maven jars (no Docker) in DIR (reused between runs),
plays the klag-exporter test stack's producer and consumer schedules against it
(klag_collector.traffic), writes an exporter config for it to DIR/klag-config.toml and
serves the metrics on http://127.0.0.1:PORT/metrics until Ctrl-C, SIGTERM or --minutes.
Everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import signal
import socket
import sys
from typing import List, Optional, Sequence

DEFAULT_DIR = pathlib.Path.home() / ".cache" / "klag-collector" / "demo"
DEFAULT_KAFKA_PORT = 9092
CONFIG_NAME = "klag-config.toml"


def config_text(bootstrap: str, http_port: int = 8000, *, poll_interval: str = "5s",
                cluster: str = "local") -> str:
    """The exporter config (klag-exporter TOML) for the demo broker at `bootstrap`."""
    return f"""\
# Written by `python -m klag_collector.demo`; rewritten on every start.
[exporter]
poll_interval = "{poll_interval}"
http_host = "127.0.0.1"
http_port = {int(http_port)}
granularity = "partition"

[exporter.timestamp_sampling]
enabled = true
cache_ttl = "30s"
max_concurrent_fetches = 10

[[clusters]]
name = "{cluster}"
bootstrap_servers = "{bootstrap}"
group_whitelist = [".*"]
topic_blacklist = ["^__.*"]

[clusters.labels]
environment = "demo"
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m klag_collector.demo",
        description="Run a local Kafka with demo traffic and serve its lag metrics.")
    p.add_argument("--port", type=int, default=8000, help="HTTP port of /metrics (default 8000)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="play the traffic schedule this many times faster (default 1)")
    p.add_argument("--dir", default=str(DEFAULT_DIR),
                   help=f"work dir for the broker's data, log and the config (default {DEFAULT_DIR})")
    p.add_argument("--minutes", type=float, default=0,
                   help="stop by itself after this many minutes (default 0: run until interrupted)")
    return p


def port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port` and we may bind it."""
    with socket.socket() as s:
        # As Kafka and Twisted do: a port in TIME_WAIT after the last run is free to them.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def banner(bootstrap: str, http_port: int, workdir: pathlib.Path, speed: float,
           minutes: float) -> str:
    """What the demo prints once everything is up."""
    stop = "Ctrl-C, or kill -TERM %d" % os.getpid()
    if minutes > 0:
        stop += f" (stops by itself after {minutes:g} min)"
    return "\n".join([
        "klag-collector demo",
        f"  Kafka bootstrap: {bootstrap}   (log: {workdir / 'broker.log'})",
        f"  traffic:         test-topic (6 partitions) -> test-consumer-group, "
        f"high-volume-topic (3) -> high-volume-consumer, speed x{speed:g}",
        f"  metrics:         http://127.0.0.1:{http_port}/metrics",
        f"  config:          {workdir / CONFIG_NAME}",
        f"  stop:            {stop}",
        "",
    ])


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):  # type: ignore[no-untyped-def]
    raise _Interrupted(signal.Signals(signum).name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Start broker, traffic and exporter; stop them all on the way out. Returns the exit code."""
    args = parser().parse_args(argv)
    if args.speed <= 0:
        parser().error("--speed must be > 0")
    if args.minutes < 0:
        parser().error("--minutes must be >= 0")
    if not 0 < args.port < 65536:
        parser().error("--port must be 1..65535")

    from . import cli, localkafka, logs
    from .config import load_config
    from .errors import ConfigError
    from .traffic import Traffic

    workdir = pathlib.Path(args.dir).expanduser().resolve()
    # Until the reactor installs its own handlers, SIGTERM/SIGINT unwind through `finally`.
    old = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    broker: Optional[localkafka.LocalBroker] = None
    traffic: Optional[Traffic] = None
    try:
        if not port_free(args.port):
            print(f"demo: port {args.port} is in use; pick another with --port", file=sys.stderr)
            return cli.EXIT_CONFIG
        broker = localkafka.LocalBroker(workdir)
        if not broker.running:
            kafka_port = DEFAULT_KAFKA_PORT if port_free(DEFAULT_KAFKA_PORT) else (
                broker.port if broker.port != DEFAULT_KAFKA_PORT and port_free(broker.port)
                else _free_port())
            broker = localkafka.LocalBroker(workdir, port=kafka_port)
        print(f"demo: starting Kafka {broker.version} at {broker.bootstrap} in {workdir} ...",
              flush=True)
        broker.start(timeout=120)

        _show_traffic_logs()
        traffic = Traffic(broker.bootstrap, speed=args.speed).start()

        path = workdir / CONFIG_NAME
        path.write_text(config_text(broker.bootstrap, args.port))
        config = load_config(str(path))

        logs.start_logging("info", "text")
        sys.stdout.write(banner(broker.bootstrap, args.port, workdir, args.speed, args.minutes))
        sys.stdout.flush()

        from twisted.internet import reactor

        if args.minutes > 0:
            reactor.callWhenRunning(  # type: ignore[attr-defined]
                reactor.callLater, args.minutes * 60, reactor.stop)  # type: ignore[attr-defined]
        for s, h in old.items():  # the reactor takes over SIGINT/SIGTERM
            signal.signal(s, h)
        return cli.run_forever(config)
    except (_Interrupted, KeyboardInterrupt):
        return 0
    except (localkafka.LocalKafkaError, ConfigError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return cli.EXIT_FAILED
    finally:
        for s in old:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        if traffic is not None:
            print("demo: stopping traffic", file=sys.stderr, flush=True)
            traffic.stop()
        if broker is not None:
            print(f"demo: stopping Kafka (pid file {broker.pid_file})", file=sys.stderr, flush=True)
            broker.stop()
        for s, h in old.items():
            signal.signal(s, h)


def _show_traffic_logs() -> None:
    """Show the traffic threads' phase changes on stderr, next to the exporter's log lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)-5s %(name)s: %(message)s"))
    logger = logging.getLogger("klag_collector.traffic")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
