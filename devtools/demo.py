"""A self-contained demo: local Kafka + the test stack's traffic + the exporter + Prometheus.

    python -m devtools.demo [--port 8000] [--speed 1] [--dir DIR] [--minutes N]
        [--bootstrap HOST:PORT] [--poll-interval 5s]
        [--no-prometheus] [--prometheus-port 9090] [--scrape-interval 10s]

It starts a single-node Kafka from Maven jars (no Docker) in DIR (reused between runs),
or uses the loopback broker given by --bootstrap; plays the klag-exporter test stack's
producer and consumer schedules against it (devtools.traffic), and, with a JDK, runs a
consumer-protocol group (KIP-848) and a share group (KIP-932) beside the classic ones
(devtools.traffic.JavaGroups, Java driver processes); writes an exporter
config for it to DIR/klag-config.toml and serves the metrics on
http://127.0.0.1:PORT/metrics; and, when `prometheus` is on PATH (Debian's package),
runs it with DIR/prometheus.yml scraping the exporter and evaluating the repo's
prometheus/alerts.yml, its data in DIR/prometheus-data. All until Ctrl-C, SIGTERM or
--minutes; the processes it started are stopped by their PIDs on the way out.
Everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import Optional, Sequence

from klag_collector.durations import parse_duration

DEFAULT_DIR = pathlib.Path.home() / ".cache" / "klag-collector" / "demo"
DEFAULT_KAFKA_PORT = 9092
DEFAULT_PROMETHEUS_PORT = 9090
CONFIG_NAME = "klag-config.toml"
PROMETHEUS_CONFIG_NAME = "prometheus.yml"
# The alert rules of a source checkout (prometheus/ is not part of the wheel).
ALERTS_FILE = pathlib.Path(__file__).resolve().parent.parent / "prometheus" / "alerts.yml"
# The job name prometheus/alerts.yml expects (KlagCollectorDown: up{job="klag-collector"}).
JOB = "klag-collector"


def config_text(bootstrap: str, http_port: int = 8000, *, poll_interval: str = "5s",
                cluster: str = "local") -> str:
    """The exporter config (klag-exporter TOML) for the demo broker at `bootstrap`."""
    return f"""\
# Written by `python -m devtools.demo`; rewritten on every start.
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


def _prom_duration(seconds: float) -> str:
    """`seconds` as Prometheus writes a duration: "10s", or "1500ms"."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def prometheus_config_text(exporter_port: int, scrape_interval: float = 10.0,
                           rule_files: Sequence[pathlib.Path] = ()) -> str:
    """Prometheus's config for the demo: scrape 127.0.0.1:`exporter_port`, load `rule_files`."""
    interval = _prom_duration(scrape_interval)
    rules = "".join(f"  - {json.dumps(str(p))}\n" for p in rule_files)
    return f"""\
# Written by `python -m devtools.demo`; rewritten on every start.
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
rule_files:{"" if rules else " []"}
{rules}scrape_configs:
  - job_name: {JOB}
    scrape_interval: {interval}
    scrape_timeout: {_prom_duration(min(scrape_interval, 5.0))}
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:{int(exporter_port)}"]
"""


def _duration_arg(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds < 0.1:
        raise argparse.ArgumentTypeError(f"{text!r} is too short (at least 100ms)")
    return seconds


def _port_arg(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError("a port is 1..65535")
    return port


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m devtools.demo",
        description="Run a local Kafka with demo traffic, serve its lag metrics, scrape "
                    "them with Prometheus.")
    p.add_argument("--port", type=_port_arg, default=8000,
                   help="HTTP port of /metrics (default 8000)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="play the traffic schedule this many times faster (default 1)")
    p.add_argument("--dir", default=str(DEFAULT_DIR),
                   help=f"work dir for the broker's data, log and the config (default {DEFAULT_DIR})")
    p.add_argument("--minutes", type=float, default=0,
                   help="stop by itself after this many minutes (default 0: run until interrupted)")
    p.add_argument("--bootstrap", metavar="HOST:PORT",
                   help="use this running loopback broker instead of starting one")
    p.add_argument("--poll-interval", type=_duration_arg, default=5.0, metavar="DURATION",
                   help="the exporter's poll interval (default 5s)")
    p.add_argument("--no-prometheus", action="store_true",
                   help="do not start Prometheus (it is started when `prometheus` is on PATH)")
    p.add_argument("--prometheus-port", type=_port_arg, metavar="PORT",
                   help=f"Prometheus's HTTP port (default {DEFAULT_PROMETHEUS_PORT} if free, "
                        "else any free port)")
    p.add_argument("--scrape-interval", type=_duration_arg, default=10.0, metavar="DURATION",
                   help="Prometheus's scrape and rule evaluation interval (default 10s)")
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
           minutes: float, *, prometheus: Optional[str] = None,
           own_broker: bool = True, java_groups: Optional[str] = None) -> str:
    """What the demo prints once everything is up; `prometheus` is its URL, or why not."""
    stop = "Ctrl-C, or kill -TERM %d" % os.getpid()
    if minutes > 0:
        stop += f" (stops by itself after {minutes:g} min)"
    kafka = f"(log: {workdir / 'broker.log'})" if own_broker else "(not started by the demo)"
    lines = [
        "klag-collector demo",
        f"  Kafka bootstrap: {bootstrap}   {kafka}",
        f"  traffic:         test-topic (6 partitions) -> test-consumer-group, "
        f"high-volume-topic (3) -> high-volume-consumer, speed x{speed:g}",
    ]
    if java_groups:
        lines.append(f"  java groups:     {java_groups}")
    lines += [
        f"  metrics:         http://127.0.0.1:{http_port}/metrics",
        f"  config:          {workdir / CONFIG_NAME}",
    ]
    if prometheus and prometheus.startswith("http"):
        graph = prometheus + "/graph?" + urllib.parse.urlencode(
            {"g0.expr": "kafka_consumergroup_group_sum_lag", "g0.tab": "0", "g0.range_input": "15m"})
        lines += [f"  prometheus:      {prometheus}   (alerts: {prometheus}/alerts; "
                  f"config: {workdir / PROMETHEUS_CONFIG_NAME})",
                  f"  lag graph:       {graph}"]
    elif prometheus:
        lines.append(f"  prometheus:      {prometheus}")
    return "\n".join(lines + [f"  stop:            {stop}", ""])


class DemoError(Exception):
    pass


class DemoPrometheus:
    """Debian's `prometheus` scraping the demo's exporter: our child, stopped by its PID."""

    def __init__(self, binary: str, workdir: pathlib.Path, port: int, exporter_port: int,
                 scrape_interval: float = 10.0) -> None:
        self.binary, self.workdir, self.port = binary, workdir, port
        self.exporter_port, self.scrape_interval = exporter_port, scrape_interval
        self.config_file = workdir / PROMETHEUS_CONFIG_NAME
        self.log_file = workdir / "prometheus.log"
        self.pid_file = workdir / "prometheus.pid"
        self.rule_files = [ALERTS_FILE] if ALERTS_FILE.is_file() else []
        self._proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "DemoPrometheus":
        """Write the config, start the process, wait until /-/ready answers 200."""
        from .localkafka import _die_with_parent

        self.config_file.write_text(prometheus_config_text(
            self.exporter_port, self.scrape_interval, self.rule_files))
        cmd = [self.binary, f"--config.file={self.config_file}",
               f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
               "--storage.tsdb.retention.time=2d",
               f"--web.listen-address=127.0.0.1:{self.port}"]
        with open(self.log_file, "ab") as log:
            log.write(f"==== klag demo prometheus start {time.strftime('%F %T')} ====\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        self.pid_file.write_text(f"{self._proc.pid}\n")
        # Talk to 127.0.0.1 directly, whatever *_proxy says.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise DemoError(f"prometheus exited with {self._proc.returncode} during startup "
                                f"(--no-prometheus runs the demo without it); {self.log_file} "
                                f"ends:\n{self._log_tail()}")
            try:
                with opener.open(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise DemoError(f"prometheus not ready after {timeout:g}s; {self.log_file} "
                                f"ends:\n{self._log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM by PID, SIGKILL after `timeout`."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.pid_file.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):  # type: ignore[no-untyped-def]
    raise _Interrupted(signal.Signals(signum).name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Start broker, traffic, exporter and Prometheus; stop them all on the way out.

    Returns the exit code."""
    args = parser().parse_args(argv)
    if args.speed <= 0:
        parser().error("--speed must be > 0")
    if args.minutes < 0:
        parser().error("--minutes must be >= 0")

    from klag_collector import cli, logs
    from klag_collector.config import load_config
    from klag_collector.errors import ConfigError

    from . import localkafka
    from .javadriver import JavaDriverError
    from .traffic import JAVA_GROUPS, SHARE_GROUP, JavaGroups, Traffic

    if args.bootstrap:
        try:
            Traffic(args.bootstrap)  # refuses a broker that is not on loopback
        except ValueError as e:
            parser().error(f"--bootstrap: {e}")

    workdir = pathlib.Path(args.dir).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    prometheus_bin = None if args.no_prometheus else shutil.which("prometheus")
    # Until the reactor installs its own handlers, SIGTERM/SIGINT unwind through `finally`.
    old = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    broker: Optional[localkafka.LocalBroker] = None
    traffic: Optional[Traffic] = None
    java_groups: Optional[JavaGroups] = None
    prometheus: Optional[DemoPrometheus] = None
    try:
        if not port_free(args.port):
            print(f"demo: port {args.port} is in use; pick another with --port", file=sys.stderr)
            return cli.EXIT_CONFIG
        prom_port = args.prometheus_port
        if prometheus_bin and prom_port and (prom_port == args.port or not port_free(prom_port)):
            print(f"demo: port {prom_port} is in use; pick another with --prometheus-port",
                  file=sys.stderr)
            return cli.EXIT_CONFIG
        if args.bootstrap:
            bootstrap = args.bootstrap
        else:
            broker = localkafka.LocalBroker(workdir)
            if not broker.running:
                kafka_port = DEFAULT_KAFKA_PORT if port_free(DEFAULT_KAFKA_PORT) else (
                    broker.port if broker.port != DEFAULT_KAFKA_PORT and port_free(broker.port)
                    else _free_port())
                broker = localkafka.LocalBroker(workdir, port=kafka_port)
            print(f"demo: starting Kafka {broker.version} at {broker.bootstrap} in {workdir} ...",
                  flush=True)
            broker.start(timeout=120)
            bootstrap = broker.bootstrap

        _show_traffic_logs()
        traffic = Traffic(bootstrap, speed=args.speed).start()
        if shutil.which("java") and shutil.which("javac"):
            java_groups = JavaGroups(bootstrap, speed=args.speed)
            try:
                java_groups.start()
                java_note: Optional[str] = ", ".join(
                    f"{topic} -> {group} ({'share' if group == SHARE_GROUP else 'consumer'} "
                    f"protocol, pid {java_groups.pids[group]})"
                    for group, (topic, _) in JAVA_GROUPS.items())
            except JavaDriverError as e:
                java_groups = None
                java_note = f"not started: {e}"
        else:
            java_note = "not started: no JDK (java and javac) on PATH"

        path = workdir / CONFIG_NAME
        path.write_text(config_text(bootstrap, args.port,
                                    poll_interval=_prom_duration(args.poll_interval)))
        config = load_config(str(path))

        if prometheus_bin:
            if not prom_port:
                prom_port = DEFAULT_PROMETHEUS_PORT if (
                    port_free(DEFAULT_PROMETHEUS_PORT) and DEFAULT_PROMETHEUS_PORT != args.port
                ) else _free_port()
            prometheus = DemoPrometheus(prometheus_bin, workdir, prom_port, args.port,
                                        args.scrape_interval)
            print(f"demo: starting Prometheus at {prometheus.url} ...", flush=True)
            prometheus.start()
            prom_note: Optional[str] = prometheus.url
        else:
            prom_note = ("not started (--no-prometheus)" if args.no_prometheus else
                         "not started: no `prometheus` on PATH (apt install prometheus)")

        logs.start_logging("info", "text")
        sys.stdout.write(banner(bootstrap, args.port, workdir, args.speed, args.minutes,
                                prometheus=prom_note, own_broker=broker is not None,
                                java_groups=java_note))
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
    except (localkafka.LocalKafkaError, ConfigError, DemoError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return cli.EXIT_FAILED
    finally:
        for s in old:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        if prometheus is not None:
            print(f"demo: stopping Prometheus (pid file {prometheus.pid_file})", file=sys.stderr,
                  flush=True)
            prometheus.stop()
        if java_groups is not None:
            print("demo: stopping the Java groups (pids "
                  + ", ".join(str(p) for p in java_groups.pids.values()) + ")",
                  file=sys.stderr, flush=True)
            java_groups.stop()
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
    logger = logging.getLogger("devtools.traffic")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
