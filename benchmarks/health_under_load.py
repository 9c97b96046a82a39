#!/usr/bin/env python3
"""/health latency while /metrics is scraped without pause (a benchmark, not a test).

Runs the exporter in a child process on the real reactor over an in-memory cluster (the
tests' FakeSource, with rows laid out by tests/fakes.py lagging_rows: G groups
each committed on every one of P partitions, timestamps known), sized to about 60,000
series; then C client threads (in --load-processes child processes) scrape /metrics over
keep-alive connections back to back, half of them asking for gzip, half for identity, while
this process asks /health on a new connection every --interval seconds. Prints /health
p50/p99/max idle and under load, the scrapes served, the exporter's reactor lag, CPU time
and RSS.

    python benchmarks/health_under_load.py                  # ~60k series, 50 clients, 20 s
    python benchmarks/health_under_load.py --json
    python benchmarks/health_under_load.py --whole-bodies   # bodies not streamed: the "before"
    python benchmarks/health_under_load.py --clients 10 --duration 5

Everything talks to 127.0.0.1 only. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import pathlib
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

REPO = pathlib.Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

T0_MS = 1_700_000_000_000
LEADERS = 3
# Series wanted at partition granularity: per (group, partition) row lag, offset, lag
# seconds and the retention figures; per partition the watermarks; per group the aggregates.
TARGET_SERIES = 60_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the exporter (child process) --------------------------------------------------------------


def serve(port: int, groups: int, partitions: int, whole_bodies: bool) -> None:
    """The exporter on 127.0.0.1:`port` over the fake cluster, until SIGTERM."""
    from twisted.internet import reactor

    from klag_collector import web

    if whole_bodies:  # the "before": every body handed to the transport in one write
        web.STREAM_OVER = sys.maxsize

    from fakes import FakeSource, lagging_rows
    from klag_collector.config import parse_config
    from klag_collector.service import make_service

    data, stamps = lagging_rows(groups, partitions, LEADERS, T0_MS - 60_000)
    config = parse_config(f"""
[exporter]
poll_interval = "1h"
http_host = "127.0.0.1"
http_port = {port}
granularity = "partition"
[[clusters]]
name = "bench"
bootstrap_servers = "127.0.0.1:1"
""", "<bench>", "toml")
    svc = make_service(config, reactor,
                       source_factory=lambda cluster, performance: FakeSource(data, stamps))
    lag = ReactorLag(reactor)
    reactor.callWhenRunning(svc.startService)
    reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(lag.restart))
    reactor.addSystemEventTrigger("before", "shutdown", lag.report)
    reactor.run()


class ReactorLag:
    """How late a 10 ms timer fires: how long the reactor thread was busy (or descheduled)
    while something waited. Restarted on SIGUSR1, printed as JSON at shutdown."""

    PERIOD = 0.010

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.late: List[float] = []
        self._due = 0.0
        self._call: Any = None

    def restart(self) -> None:
        self.late = []
        if self._call is None:
            self._next()

    def _next(self) -> None:
        self._due = time.perf_counter() + self.PERIOD
        self._call = self._reactor.callLater(self.PERIOD, self._tick)

    def _tick(self) -> None:
        self.late.append(max(0.0, time.perf_counter() - self._due))
        self._next()

    def report(self) -> None:
        print(json.dumps({"ticks": len(self.late), **percentiles(self.late)}), flush=True)


# -- the scrapers (child processes) ------------------------------------------------------------


def scrape(port: int, gzipped: bool, until: float, out: Dict[str, Any]) -> None:
    """GET /metrics back to back on one keep-alive connection until `until`."""
    headers = {"Accept-Encoding": "gzip" if gzipped else "identity"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    requests = errors = size = 0
    while time.monotonic() < until:
        try:
            conn.request("GET", "/metrics", headers=headers)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        if response.status == 200:
            requests += 1
            size += len(body)
        else:
            errors += 1
    conn.close()
    key = "gzip" if gzipped else "identity"
    with out["lock"]:
        stats = out.setdefault(key, {"requests": 0, "errors": 0, "bytes": 0})
        stats["requests"] += requests
        stats["errors"] += errors
        stats["bytes"] += size


def load(port: int, threads: int, first: int, duration: float, nice: int) -> None:
    """`threads` scrapers for `duration` seconds; thread i (counted from `first`) asks for gzip
    when i is even. Prints their totals as JSON."""
    os.nice(nice)
    until = time.monotonic() + duration
    out: Dict[str, Any] = {"lock": threading.Lock()}
    workers = [threading.Thread(target=scrape, args=(port, (first + i) % 2 == 0, until, out))
               for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    del out["lock"]
    print(json.dumps(out))


# -- this process: /health probes and the figures ----------------------------------------------


def health_once(port: int) -> float:
    """Seconds from connecting to the end of a GET /health answered 200 (a new connection)."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        answer = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    if not answer.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"/health answered {answer[:40]!r}")
    return time.perf_counter() - started


def probe(port: int, duration: float, interval: float) -> Dict[str, Any]:
    """/health every `interval` seconds for `duration` seconds."""
    latencies: List[float] = []
    errors = 0
    until = time.monotonic() + duration
    while time.monotonic() < until:
        try:
            latencies.append(health_once(port))
        except (OSError, RuntimeError):
            errors += 1
        time.sleep(interval)
    return {"probes": len(latencies), "errors": errors, **percentiles(latencies)}


def pct(values: List[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def percentiles(seconds: List[float]) -> Dict[str, float]:
    return {"p50_ms": pct(seconds, 50) * 1000, "p99_ms": pct(seconds, 99) * 1000,
            "max_ms": max(seconds, default=float("nan")) * 1000}


def cpu_seconds(pid: int) -> Tuple[float, float]:
    """Seconds process `pid` (all its threads) has run on a CPU, and waited for one."""
    ran = waited = 0
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            on_cpu, runqueue, _ = (task / "schedstat").read_text().split()
        except OSError:
            continue  # a thread that ended meanwhile
        ran += int(on_cpu)
        waited += int(runqueue)
    return ran / 1e9, waited / 1e9


def rss_kib(pid: int) -> Dict[str, int]:
    """Resident set of process `pid` now (VmRSS) and at its peak (VmHWM), KiB."""
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {name.lower(): int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


def wait_for_metrics(port: int, server: subprocess.Popen, timeout: float) -> Tuple[int, int]:
    """Wait for the first render; (series, identity body bytes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the exporter exited with {server.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            body = response.read()
            conn.close()
            if response.status == 200 and b"kafka_consumergroup_group_lag{" in body:
                series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
                return series, len(body)
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"/metrics was not rendered within {timeout:.0f}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def me(*args: object) -> List[str]:
    return [sys.executable, str(pathlib.Path(__file__).resolve()), *map(str, args)]


def start_loaders(args: argparse.Namespace, port: int) -> List[subprocess.Popen]:
    """The scraping processes, --clients threads in all, running for warm-up and probes."""
    per = math.ceil(args.clients / args.load_processes)
    loaders = []
    for first in range(0, args.clients, per):
        threads = min(per, args.clients - first)
        loaders.append(subprocess.Popen(
            me("--load", port, "--threads", threads, "--first", first,
               "--duration", args.warmup + args.duration + 1, "--nice", args.nice),
            stdout=subprocess.PIPE, text=True))
    return loaders


def scrape_totals(loaders: List[subprocess.Popen], window: float) -> Dict[str, Any]:
    """The loaders' scrapes, summed per encoding, with rates over `window` seconds."""
    totals: Dict[str, Dict[str, int]] = {}
    for loader in loaders:
        out, _ = loader.communicate(timeout=120)
        for key, stats in json.loads(out).items():
            into = totals.setdefault(key, {"requests": 0, "errors": 0, "bytes": 0})
            for name, value in stats.items():
                into[name] += value
    return {key: {**stats, "per_s": stats["requests"] / window,
                  "mib_per_s": stats["bytes"] / window / 2**20}
            for key, stats in totals.items()}


def under_load(args: argparse.Namespace, port: int, server: subprocess.Popen) -> Dict[str, Any]:
    """Probe /health while the loaders scrape; what the exporter spent meanwhile."""
    loaders = start_loaders(args, port)
    try:
        time.sleep(args.warmup)
        ran, waited = cpu_seconds(server.pid)
        server.send_signal(signal.SIGUSR1)  # reactor lag from here
        busy = probe(port, args.duration, args.interval)
        ran_after, waited_after = cpu_seconds(server.pid)
        memory = rss_kib(server.pid)
        scrapes = scrape_totals(loaders, args.warmup + args.duration + 1)
    finally:
        for loader in loaders:
            if loader.poll() is None:
                loader.kill()
                loader.wait()
    return {
        "health_under_load": busy, "scrapes": scrapes,
        "exporter_cpu_percent": 100 * (ran_after - ran) / args.duration,
        "exporter_runqueue_wait_percent": 100 * (waited_after - waited) / args.duration,
        "exporter_rss_kib": memory,
    }


def run(args: argparse.Namespace) -> Dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(me("--serve", port, "--groups", args.groups,
                                 "--partitions", args.partitions,
                                 *(["--whole-bodies"] if args.whole_bodies else [])),
                              stdout=subprocess.PIPE, text=True)
    try:
        series, identity_bytes = wait_for_metrics(port, server, timeout=300)
        log(f"serving {series} series ({identity_bytes} bytes) on 127.0.0.1:{port}")
        idle = probe(port, args.idle, args.interval)
        log(f"/health idle: p50 {idle['p50_ms']:.2f} ms, p99 {idle['p99_ms']:.2f} ms")
        loaded = under_load(args, port, server)
    finally:
        server.terminate()
        lag_report, _ = server.communicate(timeout=30)
    return {
        "params": {"groups": args.groups, "partitions": args.partitions,
                   "clients": args.clients, "load_processes": args.load_processes,
                   "nice": args.nice, "whole_bodies": args.whole_bodies,
                   "duration_s": args.duration, "interval_s": args.interval},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg())},
        "series": series, "identity_bytes": identity_bytes, "health_idle": idle, **loaded,
        "reactor_lag": json.loads(lag_report.strip().splitlines()[-1]),
    }


def summary(f: Dict[str, Any]) -> str:
    lines = [f"{f['series']} series, identity body {f['identity_bytes'] / 2**20:.1f} MiB; "
             f"{f['params']['clients']} clients scraping /metrics back to back"]
    for name in ("health_idle", "health_under_load"):
        h = f[name]
        lines.append(f"  /health {name[7:].replace('_', ' '):10} p50 {h['p50_ms']:7.2f} ms  "
                     f"p99 {h['p99_ms']:7.2f} ms  max {h['max_ms']:7.2f} ms  "
                     f"({h['probes']} probes, {h['errors']} errors)")
    for key, s in sorted(f["scrapes"].items()):
        lines.append(f"  /metrics {key:8} {s['per_s']:6.1f} scrapes/s  {s['mib_per_s']:7.1f} MiB/s"
                     f"  ({s['errors']} errors)")
    lag = f["reactor_lag"]
    lines.append(f"  reactor lag under load (a 10 ms timer's lateness) p50 {lag['p50_ms']:.2f} ms"
                 f"  p99 {lag['p99_ms']:.2f} ms  max {lag['max_ms']:.2f} ms")
    lines.append(f"  exporter CPU {f['exporter_cpu_percent']:.0f}% of one core under load, "
                 f"waiting for a CPU {f['exporter_runqueue_wait_percent']:.0f}% "
                 f"({f['machine']['cpus']} CPUs, load {f['machine']['loadavg']})")
    rss = f["exporter_rss_kib"]
    lines.append(f"  exporter RSS {rss['vmrss'] / 1024:.0f} MiB at the end of the load, "
                 f"peak {rss['vmhwm'] / 1024:.0f} MiB")
    return "\n".join(lines)


def groups_for(partitions: int) -> int:
    """Groups that make about TARGET_SERIES series over `partitions` partitions."""
    # 6 series per (group, partition) row, 2 per partition, 4 per group, as measured.
    return max(1, round((TARGET_SERIES - 2 * partitions) / (6 * partitions + 4)))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="/health latency while /metrics is scraped hard.")
    p.add_argument("--partitions", type=int, default=100, help="partitions (default 100)")
    p.add_argument("--groups", type=int, help="groups (default: about 60,000 series in all)")
    p.add_argument("--clients", type=int, default=50, help="scraping threads (default 50)")
    p.add_argument("--load-processes", type=int, default=2,
                   help="processes the scraping threads run in (default 2)")
    p.add_argument("--duration", type=float, default=20.0,
                   help="seconds of /health probes under load (default 20)")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="seconds of load before probing (default 3)")
    p.add_argument("--idle", type=float, default=3.0,
                   help="seconds of /health probes before the load (default 3)")
    p.add_argument("--interval", type=float, default=0.02,
                   help="seconds between /health probes (default 0.02)")
    p.add_argument("--nice", type=int, default=10,
                   help="niceness of the scraping processes (default 10), so that on a small "
                        "machine they do not starve the exporter they measure")
    p.add_argument("--whole-bodies", action="store_true",
                   help="hand each /metrics body to the transport in one write instead of "
                        "streaming it (how it was before web.py's _BodyProducer)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    # The child processes.
    p.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--load", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.groups is None:
        args.groups = groups_for(args.partitions)
    for name in ("partitions", "groups", "clients", "load_processes"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.groups, args.partitions, args.whole_bodies)
        return 0
    if args.load is not None:
        load(args.load, args.threads, args.first, args.duration, args.nice)
        return 0
    figures = run(args)
    print(json.dumps(figures, indent=2) if args.json else summary(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
