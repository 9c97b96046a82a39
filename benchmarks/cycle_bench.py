#!/usr/bin/env python3
"""Collection-cycle benchmark for klag-collector (a benchmark, not a test).

Creates G consumer groups over P partitions on a local broker (or an existing one given
with --bootstrap), runs the exporter in this process on the real reactor, drives N
collection cycles by hand and prints:

- cycle wall time (p50, max) and where each cycle spends it,
- Kafka requests per cycle by API (counted where kafka-python sends every request),
- /metrics latency p50/p99 for identity and gzip, measured from a separate process,
- series count, render time of one snapshot, RSS.

    python benchmarks/cycle_bench.py                          # 200 groups x 2,000 partitions
    python benchmarks/cycle_bench.py --groups 1000 --partitions 20000 --kafka-timeout 120s
    python benchmarks/cycle_bench.py --json > figures.json

Everything talks to 127.0.0.1 only (the local broker, the exporter's HTTP port), unless
--bootstrap names another broker. See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import multiprocessing
import os
import pathlib
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Dict, List, Optional

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Seconds between the timestamps of consecutive records of a partition: record r of R is
# (R - r) minutes old, so a group at offset o lags about (R - o) minutes.
RECORD_SPACING_MS = 60_000
# Topics per CreateTopics request during setup.
CREATE_BATCH = 20


def log(msg: str) -> None:
    """Progress goes to stderr, so stdout carries only the summary (or the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Setup (runs in a child process, so its clients and buffers do not count in the RSS)
# ---------------------------------------------------------------------------------------


def topic_layout(prefix: str, partitions: int, per_topic: int) -> List[tuple]:
    """[(topic, partition count)]: P partitions as topics of `per_topic` (the last may be smaller)."""
    n = math.ceil(partitions / per_topic)
    return [(f"{prefix}-t{i:04d}", min(per_topic, partitions - i * per_topic)) for i in range(n)]


def group_names(prefix: str, groups: int) -> List[str]:
    return [f"{prefix}-g{i:05d}" for i in range(groups)]


def committed_offset(group_index: int, topic_count: int, partition: int, records: int) -> int:
    """Where group i stands on a partition of its topic: 0..records, varying per group.

    Groups sharing a topic stand at different offsets (as real groups do), and one
    partition in records+1 has lag 0.
    """
    j = group_index // topic_count
    return (j + partition) % (records + 1)


def setup_cluster(bootstrap: str, prefix: str, groups: int, partitions: int, per_topic: int,
                  records: int, reuse: bool) -> Dict[str, Any]:
    """Create topics, produce, commit group offsets. Returns timings and counts."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # Setup clients warn about transient states (no node yet, leaders moving) they retry.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    sys.path.insert(0, str(REPO / "tests"))
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.structs import TopicPartition
    from kafkahelp import commit

    out: Dict[str, Any] = {"reused_topics": 0, "reused_groups": 0}
    layout = topic_layout(prefix, partitions, per_topic)
    names = group_names(prefix, groups)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="klag-bench-setup",
                             request_timeout_ms=120_000)
    try:
        # -- topics
        t0 = time.perf_counter()
        existing: Dict[str, int] = {}
        if reuse:
            mine = [t for t in admin.list_topics() if t.startswith(prefix + "-t")]
            if mine:
                for t in admin.describe_topics(mine):
                    existing[t["name"]] = len(t["partitions"])
        for topic, n in layout:
            if topic in existing and existing[topic] != n:
                raise SystemExit(f"--reuse: topic {topic} has {existing[topic]} partitions, "
                                 f"expected {n}; use another --prefix")
        create = [(t, n) for t, n in layout if t not in existing]
        out["reused_topics"] = len(layout) - len(create)
        for start in range(0, len(create), CREATE_BATCH):
            chunk = create[start:start + CREATE_BATCH]
            admin.create_topics({t: {"num_partitions": n, "replication_factor": 1}
                                 for t, n in chunk}, timeout_ms=120_000)
        if create:
            admin.wait_for_topics([t for t, _ in create], timeout_ms=300_000)
        out["create_topics_s"] = time.perf_counter() - t0
        log(f"setup: {len(create)} topics created ({out['reused_topics']} reused) "
            f"in {out['create_topics_s']:.1f}s")

        # -- records: one batch of `records` records per partition, explicit timestamps
        t0 = time.perf_counter()
        produced = 0
        errors: List[BaseException] = []
        if create:
            # Fresh partitions answer NotLeaderForPartition for a moment after
            # wait_for_topics: retry until delivery_timeout; one request in flight keeps
            # each partition's records in order across retries.
            logging.getLogger("kafka.producer").setLevel(logging.ERROR)
            producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="klag-bench-producer",
                                     acks=1, linger_ms=50, batch_size=64 * 1024,
                                     enable_idempotence=False,
                                     max_in_flight_requests_per_connection=1,
                                     retries=1_000_000, retry_backoff_ms=250,
                                     request_timeout_ms=60_000, delivery_timeout_ms=300_000)
            now_ms = int(time.time() * 1000)
            stamps = [now_ms - (records - r) * RECORD_SPACING_MS for r in range(records)]
            value = b"klag-bench-record"
            try:
                for topic, n in create:
                    for p in range(n):
                        for ts in stamps:
                            producer.send(topic, value=value, partition=p,
                                          timestamp_ms=ts).add_errback(errors.append)
                            produced += 1
                producer.flush(timeout=600)
            finally:
                producer.close(timeout=30)
        if errors:
            raise SystemExit(f"setup: {len(errors)} produce errors, first: {errors[0]!r}")
        out["records_produced"] = produced
        out["produce_s"] = time.perf_counter() - t0
        log(f"setup: {produced} records produced in {out['produce_s']:.1f}s")

        # -- group offsets (alter_group_offsets on empty groups), a few in parallel
        t0 = time.perf_counter()
        have = set()
        if reuse:
            have = {g["group_id"] for g in admin.list_groups() if g["group_id"].startswith(prefix)}
        todo = [(i, g) for i, g in enumerate(names) if g not in have]
        out["reused_groups"] = len(names) - len(todo)

        def commit_one(item: tuple) -> None:
            i, group = item
            topic, n = layout[i % len(layout)]
            offsets = {TopicPartition(topic, p): committed_offset(i, len(layout), p, records)
                       for p in range(n)}
            commit(admin, group, offsets, timeout=120)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(commit_one, todo))
        out["commit_s"] = time.perf_counter() - t0
        out["groups_committed"] = len(todo)
        log(f"setup: {len(todo)} groups committed ({out['reused_groups']} reused) "
            f"in {out['commit_s']:.1f}s")
    finally:
        admin.close()
    out["topics"] = len(layout)
    return out


# ---------------------------------------------------------------------------------------
# Instrumentation: what each cycle asks of Kafka, and where its time goes
# ---------------------------------------------------------------------------------------


class Recorder:
    """Requests by API and time by step, for one cycle (written from several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter = Counter()
        self.request_s: Dict[str, float] = defaultdict(float)
        self.steps: Dict[str, List[float]] = defaultdict(lambda: [0, 0.0])  # calls, seconds

    def request(self, api: str) -> None:
        with self._lock:
            self.requests[api] += 1

    def request_done(self, api: str, seconds: float) -> None:
        with self._lock:
            self.request_s[api] += seconds

    def step(self, name: str, seconds: float) -> None:
        with self._lock:
            entry = self.steps[name]
            entry[0] += 1
            entry[1] += seconds


CURRENT: Optional[Recorder] = None


def instrument() -> None:
    """Wrap kafka-python's single send path and the blocking calls a cycle makes."""
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient
    from kafka.net.connection import KafkaConnection

    from klag_collector import kafka_source, poller

    original_send = KafkaConnection._send_request

    # Every request of every client (ApiVersions and SASL at connect included) passes here.
    def _send_request(self, request, future=None, timeout_at=None):
        rec = CURRENT
        started = time.perf_counter()
        fut = original_send(self, request, future=future, timeout_at=timeout_at)
        if rec is not None:
            api = type(request).__name__
            rec.request(api)
            fut.add_both(lambda _result: rec.request_done(api, time.perf_counter() - started))
        return fut

    KafkaConnection._send_request = _send_request

    def timed(cls: Any, name: str, label: str) -> None:
        original = getattr(cls, name)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            rec = CURRENT
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if rec is not None:
                    rec.step(label, time.perf_counter() - started)

        setattr(cls, name, wrapper)

    timed(KafkaAdminClient, "__init__", "admin client connect")
    for name in ("list_groups", "describe_groups", "list_group_offsets", "describe_topics",
                 "list_partition_offsets", "describe_configs"):
        timed(KafkaAdminClient, name, f"admin.{name}")
    timed(KafkaConsumer, "__init__", "consumer connect")
    # What a timestamp fetch does with its consumer besides polling: the seeks, pauses and
    # end-of-partition checks grow with the partitions and keys of the batch.
    for name in ("assign", "seek", "poll", "position", "pause", "close"):
        timed(KafkaConsumer, name, f"consumer.{name}")
    timed(kafka_source.KafkaSource, "read", "source.read (steps 1-5)")
    timed(kafka_source.KafkaSource, "fetch_timestamps", "source.fetch_timestamps (step 6)")
    # build_snapshot is looked up in the poller module at each cycle.
    original_build = poller.build_snapshot

    def build_snapshot(*args: Any, **kwargs: Any) -> Any:
        rec = CURRENT
        started = time.perf_counter()
        try:
            return original_build(*args, **kwargs)
        finally:
            if rec is not None:
                rec.step("build_snapshot (step 7)", time.perf_counter() - started)

    poller.build_snapshot = build_snapshot


# ---------------------------------------------------------------------------------------
# The /metrics client: a separate process, so the bench's GIL does not slow the server
# ---------------------------------------------------------------------------------------

CLIENT = r"""
import http.client, json, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
out = {}
for name in ("identity", "gzip"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Accept-Encoding": name}
    sockets = set()
    def get():
        conn.request("GET", "/metrics", headers=headers)
        r = conn.getresponse()
        body = r.read()
        sockets.add(id(conn.sock))
        return r, body
    for _ in range(5):  # warm-up: connection, first-touch of the cached bytes
        get()
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        r, body = get()
        lat.append(time.perf_counter() - t0)
    conn.close()
    out[name] = {"latencies_s": lat, "bytes": len(body), "status": r.status,
                 "content_encoding": r.getheader("Content-Encoding"), "connections": len(sockets)}
print(json.dumps(out))
"""


def scrape_bench(port: int, requests: int) -> Dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", CLIENT, str(port), str(requests)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"/metrics client failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------


def pct(values: List[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[k]


def rss_kib() -> Dict[str, int]:
    """Current (VmRSS) and peak (VmHWM, ru_maxrss) resident set of this process, KiB."""
    status = pathlib.Path("/proc/self/status").read_text()
    fields = dict(re.findall(r"^(Vm\w+):\s+(\d+) kB", status, re.M))
    return {"vmrss": int(fields.get("VmRSS", 0)), "vmhwm": int(fields.get("VmHWM", 0)),
            "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def pid_rss_kib(pid: Optional[int]) -> Optional[int]:
    if pid is None:
        return None
    try:
        m = re.search(r"^VmRSS:\s+(\d+) kB", pathlib.Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def code_version() -> str:
    """The commit benchmarked, and whether klag_collector/ differs from it."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                "klag_collector"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    changed = sorted(line[3:] for line in dirty if line.strip())
    if not head:
        return "unknown (not a git checkout)"
    return head + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exporter_config(bootstrap: str, prefix: str, port: int, args: argparse.Namespace) -> str:
    pattern = json.dumps("^" + re.escape(prefix + "-"))
    return f"""
[exporter]
poll_interval = "1h"
http_host = "127.0.0.1"
http_port = {port}
granularity = "partition"

[exporter.timestamp_sampling]
enabled = {'false' if args.no_timestamps else 'true'}
cache_ttl = {json.dumps(args.cache_ttl)}

[exporter.performance]
kafka_timeout = {json.dumps(args.kafka_timeout)}

[[clusters]]
name = "bench"
bootstrap_servers = {json.dumps(bootstrap)}
group_whitelist = [{pattern}]
topic_whitelist = [{pattern}]
"""


# ---------------------------------------------------------------------------------------
# The exporter run, on the real reactor
# ---------------------------------------------------------------------------------------


async def drive(reactor: Any, config_text: str, args: argparse.Namespace,
                figures: Dict[str, Any]) -> None:
    global CURRENT
    from twisted.internet import threads

    from klag_collector.config import parse_config
    from klag_collector.service import make_service

    config = parse_config(config_text, "<bench>", "toml")
    svc = make_service(config, reactor)
    # The bench reads the service's internals (a measuring tool beside the package): the
    # one cluster's poller, and the renderer whose pass follows every cycle.
    poller = svc._pollers[0]
    renderer = svc._renderer
    port = config.exporter.http_port

    # Time the timestamp phase, step 6 as the poller sees it: sample() is the worker-thread
    # plan (cache look-ups, batching by leader), the fan-out of batch fetches on the reactor
    # (each fetch runs source.fetch_timestamps in a worker thread, timed in instrument()),
    # and the worker-thread merge into the cache. The poller and the sampler look these up
    # on the instance, so wrapping the instance's attributes is enough.
    sampler = poller.sampler
    if sampler is not None:
        def timed_deferred(name: str, label: str) -> None:
            original = getattr(sampler, name)

            def wrapper(*a: Any, **kw: Any) -> Any:
                rec, started = CURRENT, time.perf_counter()
                d = original(*a, **kw)

                def done(result: Any) -> Any:
                    if rec is not None:
                        rec.step(label, time.perf_counter() - started)
                    return result

                return d.addBoth(done)

            setattr(sampler, name, wrapper)

        def timed_blocking(name: str, label: str) -> None:
            original = getattr(sampler, name)

            def wrapper(*a: Any, **kw: Any) -> Any:
                rec, started = CURRENT, time.perf_counter()
                try:
                    return original(*a, **kw)
                finally:
                    if rec is not None:
                        rec.step(label, time.perf_counter() - started)

            setattr(sampler, name, wrapper)

        timed_deferred("sample", "sampler.sample (step 6, total)")
        timed_blocking("plan", "sampler.plan (thread)")
        timed_deferred("_fetch_all", "sampler fetch fan-out (reactor)")
        timed_blocking("merge", "sampler.merge (thread)")

    cycles: List[Dict[str, Any]] = []
    started_service = False
    try:
        for n in range(1, args.cycles + 1):
            rec = Recorder()
            hits0, misses0 = poller.cache.hits, poller.cache.misses
            errors0 = poller.cache.fetch_errors
            CURRENT = rec
            t0 = time.perf_counter()
            if not started_service:
                # startService starts the pollers' LoopingCall, whose first tick (now=True)
                # is cycle 1; with poll_interval 1h no other tick comes.
                svc.startService()
                started_service = True
            await poller.poll_now()
            t1 = time.perf_counter()
            wall = t1 - t0
            h = poller.health
            if h.consecutive_failures:
                raise RuntimeError(f"cycle {n} failed: {h.last_error}")
            await renderer.when_rendered()
            render_wait = time.perf_counter() - t1
            # A Kafka call that the cycle gave up on (addTimeout) keeps its worker
            # thread busy: wait for every pool to go idle, still counting its requests
            # for this cycle, so the next cycle and the scrapes start on a quiet process.
            busy_after = await wait_idle(reactor, svc, args.idle_timeout) - t1
            CURRENT = None
            view = poller.snapshot.view
            cycle = {
                "cycle": n,
                "wall_s": wall,
                "exporter_duration_s": h.last_duration,
                "render_after_s": render_wait,
                "busy_after_s": busy_after,
                "ts_fetch_errors": poller.cache.fetch_errors - errors0,
                "requests": dict(rec.requests),
                "request_s": dict(rec.request_s),
                "steps": {k: {"calls": v[0], "s": v[1]} for k, v in rec.steps.items()},
                "groups": len(view.groups),
                "partition_rows": len(view.partitions),
                "rows_with_time_lag": sum(1 for r in view.partitions if r.lag_seconds is not None),
                "rows_lag_gt_0": sum(1 for r in view.partitions if r.lag > 0),
                # Groups that lag by offsets yet report max_lag_seconds 0: only their
                # caught-up partitions had a known time lag (every record here is >= 1
                # minute old, so a true 0 is impossible when lag > 0).
                "groups_lagging_but_max_lag_seconds_0": sum(
                    1 for g in view.groups if (g.max_lag or 0) > 0 and g.max_lag_seconds == 0),
                "groups_without_max_lag_seconds": sum(
                    1 for g in view.groups if g.max_lag_seconds is None),
                "skipped_partitions": dict(view.skipped),
                "skipped_groups": dict(view.skipped_groups),
                "ts_cache_hits": poller.cache.hits - hits0,
                "ts_cache_misses": poller.cache.misses - misses0,
                "ts_cache_entries": poller.cache.stats().entries,
            }
            cycles.append(cycle)
            log(f"cycle {n}: {wall * 1000:.0f} ms, {sum(rec.requests.values())} requests, "
                f"{cycle['partition_rows']} rows, {cycle['rows_with_time_lag']} with time lag, "
                f"skipped {cycle['skipped_partitions'] or '-'}, render {render_wait * 1000:.0f} ms, "
                f"threads busy {busy_after * 1000:.0f} ms after the cycle")
            if n < args.cycles and args.pause > 0:
                await deferred_sleep(reactor, args.pause)
        figures["cycles"] = cycles
        figures["rss_after_cycles_kib"] = rss_kib()

        # /metrics from another process.
        log(f"/metrics: {args.requests} requests identity + {args.requests} gzip "
            f"from a separate process")
        scrape = await threads.deferToThread(scrape_bench, port, args.requests)
        figures["metrics_http"] = {
            enc: {
                "p50_ms": pct(r["latencies_s"], 50) * 1000,
                "p99_ms": pct(r["latencies_s"], 99) * 1000,
                "max_ms": max(r["latencies_s"]) * 1000,
                "bytes": r["bytes"],
                "status": r["status"],
                "content_encoding": r["content_encoding"],
                "connections": r["connections"],
                "requests": len(r["latencies_s"]),
            }
            for enc, r in scrape.items()
        }

        # Series, bodies, render time of one snapshot (off the reactor thread, as the
        # exporter does it; nothing else runs now).
        current = renderer.current
        text = current.body(False, False)
        series = Counter()
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                series[line.split("{", 1)[0].split(" ", 1)[0]] += 1
        figures["series"] = sum(series.values())
        figures["series_by_family"] = dict(series.most_common())
        figures["bodies_bytes"] = {
            "text": len(current.body(False, False)),
            "text_gzip": len(current.body(False, True)),
            "openmetrics": len(current.body(True, False)),
            "openmetrics_gzip": len(current.body(True, True)),
        }

        # The render of one snapshot: what the renderer's pass does after a cycle, its
        # per-cluster render of the current reports (read on the reactor thread, as
        # MetricsRenderer.invalidate reads them). A new ReportRenderer each time, so every
        # repeat builds the cluster's lag lines from its snapshot, then the health lines,
        # the merge into the four variants and the status page. A second pass of the same
        # ReportRenderer keeps the lag lines: that is what a change of health alone costs.
        from klag_collector import metrics as metrics_mod
        from klag_collector.collector import read_clusters
        from klag_collector.render import ReportRenderer, Variant

        definitions = metrics_mod.families_for(config.exporter.granularity)
        reports = read_clusters(svc._pollers, reactor.seconds())

        def time_render() -> Dict[str, Any]:
            full, kept = [], []
            rendered = None
            for _ in range(args.render_repeats):
                report_renderer = ReportRenderer(definitions)
                t = time.perf_counter()
                rendered = report_renderer.render(reports)
                full.append(time.perf_counter() - t)
                t = time.perf_counter()
                report_renderer.render(reports)
                kept.append(time.perf_counter() - t)
            same = rendered is not None and all(
                rendered.bodies[v] == current.bodies[v] for v in current.bodies)
            return {"full": full, "kept": kept, "same_as_served": same}

        # prometheus_client's way, for comparison: a CollectorRegistry holding the
        # service's public Collector, encoded by generate_latest (text alone), and all four
        # variants its way (both encoders, each body gzipped at the same level).
        def time_prometheus_client() -> Dict[str, Any]:
            import gzip

            from prometheus_client import CollectorRegistry, exposition
            from prometheus_client.openmetrics import exposition as om_exposition

            from klag_collector.render import GZIP_LEVEL

            registry = CollectorRegistry()
            registry.register(svc.collector)
            t = time.perf_counter()
            text_body = exposition.generate_latest(registry)
            text_only = time.perf_counter() - t
            t = time.perf_counter()
            gzip.compress(exposition.generate_latest(registry), GZIP_LEVEL, mtime=0)
            om_body = om_exposition.generate_latest(registry)
            gzip.compress(om_body, GZIP_LEVEL, mtime=0)
            all_four = time.perf_counter() - t
            return {"text_only": text_only, "all_four": all_four,
                    "text_same_as_served": text_body == current.body(False, False),
                    "openmetrics_same_as_served": om_body == current.bodies[Variant(True, False)]}

        renders = await threads.deferToThread(time_render)
        client = await threads.deferToThread(time_prometheus_client)
        figures["render"] = {
            "p50_ms": pct(renders["full"], 50) * 1000, "min_ms": min(renders["full"]) * 1000,
            "repeats": len(renders["full"]),
            "kept_lag_lines_p50_ms": pct(renders["kept"], 50) * 1000,
            "same_as_served": renders["same_as_served"],
            "clusters": len(reports),
            "text_only_ms": client["text_only"] * 1000,
            "prometheus_client_all_four_ms": client["all_four"] * 1000,
            "prometheus_client_text_same": client["text_same_as_served"],
            "prometheus_client_openmetrics_same": client["openmetrics_same_as_served"],
        }
        figures["rss_end_kib"] = rss_kib()
    finally:
        CURRENT = None
        if started_service:
            await svc.stopService()


def pools_busy(svc: Any) -> int:
    """Work items running or queued in the exporter's thread pools."""
    total = 0
    for pool in svc._pools:
        stats = pool._team.statistics()
        total += stats.busyWorkerCount + stats.backloggedWorkCount
    return total


async def wait_idle(reactor: Any, svc: Any, timeout: float) -> float:
    """Wait until the exporter's pools are idle (at most `timeout` s); return that time."""
    deadline = time.perf_counter() + timeout
    while pools_busy(svc) and time.perf_counter() < deadline:
        await deferred_sleep(reactor, 0.02)
    if pools_busy(svc):
        log(f"warning: exporter threads still busy after {timeout:.0f}s")
    return time.perf_counter()


def deferred_sleep(reactor: Any, seconds: float) -> Any:
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


def run_exporter(config_text: str, args: argparse.Namespace) -> Dict[str, Any]:
    from twisted.internet import defer
    from twisted.internet import reactor

    figures: Dict[str, Any] = {}
    outcome: Dict[str, Any] = {}

    def start() -> None:
        d = defer.ensureDeferred(drive(reactor, config_text, args, figures))

        def finish(result: Any) -> None:
            outcome["result"] = result
            reactor.stop()

        d.addBoth(finish)

    reactor.callWhenRunning(start)
    reactor.run()
    result = outcome.get("result")
    if result is None and "result" not in outcome:
        raise RuntimeError("reactor stopped before the benchmark finished (interrupted?)")
    if hasattr(result, "raiseException"):
        result.raiseException()
    return figures


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

API_ORDER = ["ApiVersionsRequest", "MetadataRequest", "FindCoordinatorRequest",
             "ListGroupsRequest", "DescribeGroupsRequest", "OffsetFetchRequest",
             "ListOffsetsRequest", "DescribeConfigsRequest", "FetchRequest"]


def summary(f: Dict[str, Any]) -> str:
    lines: List[str] = []
    add = lines.append
    a = f["params"]
    add("klag-collector cycle benchmark")
    add("=" * 78)
    add(f"  broker       {f['broker']}")
    add(f"  objects      {a['groups']} groups x {a['partitions']} partitions "
        f"({f['setup']['topics']} topics of <= {a['partitions_per_topic']}), "
        f"{a['records_per_partition']} records/partition, prefix {f['prefix']}")
    sampling = ("off" if a["no_timestamps"] else f"on (cache_ttl {a['cache_ttl']})")
    add(f"  exporter     in-process, real reactor, granularity partition, timestamp sampling "
        f"{sampling}, kafka_timeout {a['kafka_timeout']}")
    add(f"  code         {f['code']}")
    add(f"  machine      {f['machine']['cpus']} CPUs, Python {f['machine']['python']}, "
        f"kafka-python {f['machine']['kafka_python']}, load avg at start "
        f"{f['machine']['loadavg_start']}")
    add("")
    s = f["setup"]
    add("Setup (not in any figure below)")
    if f.get("broker_start_s") is not None:
        add(f"  broker start          {f['broker_start_s']:8.1f} s")
    add(f"  create topics         {s['create_topics_s']:8.1f} s   "
        f"({s['topics'] - s['reused_topics']} created, {s['reused_topics']} reused)")
    add(f"  produce               {s['produce_s']:8.1f} s   ({s['records_produced']} records)")
    add(f"  commit group offsets  {s['commit_s']:8.1f} s   "
        f"({s['groups_committed']} groups, {s['reused_groups']} reused)")
    add(f"  setup total           {f['setup_total_s']:8.1f} s")
    add("")

    cycles = f["cycles"]
    walls = [c["wall_s"] * 1000 for c in cycles]
    add("Cycles (wall: poll_now() until its Deferred fires; cycle 1 is cold: new clients, empty cache;")
    add("        render, busy: ms after the cycle until /metrics is re-rendered / all worker threads idle)")
    add(f"  {'cycle':>5} {'wall ms':>9} {'render':>7} {'busy':>7} {'groups':>7} {'rows':>7} "
        f"{'lag>0':>7} {'time lag':>9} {'ts hit':>7} {'ts miss':>8} {'ts err':>6}  skipped")
    for c in cycles:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(c["skipped_partitions"].items())) or "-"
        if c["skipped_groups"]:
            skipped += "; groups " + ", ".join(f"{k}={v}" for k, v in c["skipped_groups"].items())
        add(f"  {c['cycle']:>5} {c['wall_s'] * 1000:9.0f} {c['render_after_s'] * 1000:7.0f} "
            f"{c['busy_after_s'] * 1000:7.0f} "
            f"{c['groups']:7d} {c['partition_rows']:7d} {c['rows_lag_gt_0']:7d} "
            f"{c['rows_with_time_lag']:9d} {c['ts_cache_hits']:7d} {c['ts_cache_misses']:8d} "
            f"{c['ts_fetch_errors']:6d}  {skipped}")
    understated = [c["groups_lagging_but_max_lag_seconds_0"] for c in cycles]
    if any(understated):
        add(f"  groups with offset lag > 0 but max_lag_seconds 0 (time lag unknown on every "
            f"lagging partition), per cycle: {understated}")
    warm = walls[1:] or walls
    add(f"  cycle time: p50 {pct(walls, 50):.0f} ms, max {max(walls):.0f} ms over {len(walls)} "
        f"cycles (warm cycles 2..{len(walls)}: p50 {pct(warm, 50):.0f} ms, "
        f"max {max(warm):.0f} ms)")
    add("")

    shown = list(range(len(cycles)))
    if len(shown) > 6:
        shown = [0, 1, len(cycles) - 1]
    head = "".join(f"{'c' + str(cycles[i]['cycle']):>8}" for i in shown)
    add("Kafka requests per cycle, by API (count; c1 = cold)")
    apis = sorted({k for c in cycles for k in c["requests"]},
                  key=lambda k: (API_ORDER.index(k) if k in API_ORDER else 99, k))
    add(f"  {'API':<30}{head}{'ms/req c' + str(cycles[-1]['cycle']):>14}")
    for api in apis:
        row = "".join(f"{cycles[i]['requests'].get(api, 0):8d}" for i in shown)
        last = cycles[-1]
        n = last["requests"].get(api, 0)
        ms = f"{last['request_s'].get(api, 0) / n * 1000:.1f}" if n else "-"
        add(f"  {api:<30}{row}{ms:>14}")
    totals = "".join(f"{sum(cycles[i]['requests'].values()):8d}" for i in shown)
    add(f"  {'total':<30}{totals}")
    add("")

    add("Where a cycle's time goes (ms; calls in brackets when > 1)")
    step_names: List[str] = []
    for c in cycles:
        for k in c["steps"]:
            if k not in step_names:
                step_names.append(k)
    order = ["source.read (steps 1-5)", "admin client connect", "admin.list_groups",
             "admin.describe_groups", "admin.list_group_offsets", "admin.describe_topics",
             "admin.list_partition_offsets", "admin.describe_configs",
             "sampler.sample (step 6, total)", "sampler.plan (thread)",
             "sampler fetch fan-out (reactor)", "source.fetch_timestamps (step 6)",
             "consumer connect", "consumer.assign", "consumer.seek", "consumer.poll",
             "consumer.position", "consumer.pause", "consumer.close", "sampler.merge (thread)",
             "build_snapshot (step 7)"]
    step_names.sort(key=lambda k: order.index(k) if k in order else 99)
    add(f"  {'step':<34}{''.join(f'{h:>12}' for h in head.split())}")
    for name in step_names:
        cells = []
        for i in shown:
            st = cycles[i]["steps"].get(name)
            if st is None:
                cells.append(f"{'-':>12}")
            else:
                cell = f"{st['s'] * 1000:.0f}" + (f" [{st['calls']}]" if st["calls"] > 1 else "")
                cells.append(f"{cell:>12}")
        indent = ("      " if name.startswith("consumer")
                  else "    " if name.startswith(("admin.", "admin ", "sampler.plan",
                                                  "sampler fetch", "sampler.merge",
                                                  "source.fetch"))
                  else "  ")
        add(f"{indent}{name:<{36 - len(indent)}}{''.join(cells)}")
    add("")

    m = f["metrics_http"]
    add(f"/metrics ({m['identity']['requests']} requests per encoding, one keep-alive connection, "
        f"from a separate process, after the cycles)")
    add(f"  {'encoding':<10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'body bytes':>13}{'conns':>7}")
    for enc in ("identity", "gzip"):
        r = m[enc]
        add(f"  {enc:<10}{r['p50_ms']:9.2f}{r['p99_ms']:9.2f}{r['max_ms']:9.2f}"
            f"{r['bytes']:13d}{r['connections']:7d}")
    b = f["bodies_bytes"]
    add(f"  series       {f['series']} (sample lines in the text body)")
    top = ", ".join(f"{k.replace('kafka_consumergroup_', '…')} {v}"
                    for k, v in list(f["series_by_family"].items())[:4])
    add(f"               largest families: {top}")
    add(f"  bodies       text {b['text']} B, gzip {b['text_gzip']} B; OpenMetrics "
        f"{b['openmetrics']} B, gzip {b['openmetrics_gzip']} B")
    r = f["render"]
    yes_no = {True: "yes", False: "NO"}
    add(f"  render       ReportRenderer.render(reports) of one snapshot ({r['clusters']} cluster(s); "
        f"lag lines built, text + OpenMetrics, each plain + gzip, status page):")
    add(f"               p50 {r['p50_ms']:.0f} ms, min {r['min_ms']:.0f} ms over {r['repeats']}; "
        f"again with the lag lines kept {r['kept_lag_lines_p50_ms']:.0f} ms; "
        f"bytes as served: {yes_no[r['same_as_served']]}")
    add(f"               prometheus_client generate_latest(CollectorRegistry with svc.collector): "
        f"text only {r['text_only_ms']:.0f} ms, all four its way "
        f"{r['prometheus_client_all_four_ms']:.0f} ms; same bytes: text "
        f"{yes_no[r['prometheus_client_text_same']]}, OpenMetrics "
        f"{yes_no[r['prometheus_client_openmetrics_same']]}")
    add("")

    def mib(kib: Optional[int]) -> str:
        return "-" if kib is None else f"{kib / 1024:.0f} MiB"

    add("Memory (this process: exporter + bench instrumentation; setup ran in a child process)")
    add(f"  RSS before the exporter      {mib(f['rss_before_kib']['vmrss'])}")
    add(f"  RSS after the cycles         {mib(f['rss_after_cycles_kib']['vmrss'])}")
    add(f"  RSS at the end (VmRSS)       {mib(f['rss_end_kib']['vmrss'])}")
    add(f"  peak (ru_maxrss)             {mib(f['rss_end_kib']['maxrss'])}")
    if f.get("broker_rss_kib") is not None:
        add(f"  broker JVM RSS (for scale)   {mib(f['broker_rss_kib'])}")
    add(f"  total bench time             {f['total_s']:.0f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark klag-collector's collection cycle and /metrics on a local broker.")
    p.add_argument("--groups", type=int, default=200, help="consumer groups (default 200)")
    p.add_argument("--partitions", type=int, default=2000, help="partitions in all (default 2000)")
    p.add_argument("--partitions-per-topic", type=int, default=50,
                   help="partitions per topic (default 50): P/50 topics")
    p.add_argument("--records", type=int, default=10,
                   help="records produced per partition (default 10)")
    p.add_argument("--cycles", type=int, default=5, help="collection cycles (default 5)")
    p.add_argument("--pause", type=float, default=0.0,
                   help="seconds between cycles (default 0)")
    p.add_argument("--requests", type=int, default=200,
                   help="/metrics requests per encoding (default 200)")
    p.add_argument("--render-repeats", type=int, default=3,
                   help="timings of the render of one snapshot (default 3)")
    p.add_argument("--cache-ttl", default="60s", help="timestamp cache_ttl (default 60s)")
    p.add_argument("--no-timestamps", action="store_true",
                   help="timestamp sampling off (no time lag): the cycle without step 6")
    p.add_argument("--kafka-timeout", default="30s", help="exporter kafka_timeout (default 30s)")
    p.add_argument("--idle-timeout", type=float, default=120.0,
                   help="after each cycle, wait up to this many seconds for the exporter's "
                        "worker threads to finish (default 120)")
    p.add_argument("--bootstrap", help="use this broker (host:port) instead of starting one")
    p.add_argument("--workdir", help="broker directory (default: a temp dir, removed at the end)")
    p.add_argument("--keep-broker", action="store_true",
                   help="leave the local broker running (detached) for a later --reuse run")
    p.add_argument("--reuse", action="store_true",
                   help="fixed name prefix; keep topics and groups that exist, create the rest")
    p.add_argument("--prefix", help="topic/group name prefix (default klagbench-<random>, "
                                    "or klagbench-gG-pP-nN-rR with --reuse)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    args = p.parse_args(argv)
    for name in ("groups", "partitions", "partitions_per_topic", "records", "cycles", "requests",
                 "render_repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    began = time.perf_counter()
    import kafka

    figures: Dict[str, Any] = {
        "params": {
            "groups": args.groups, "partitions": args.partitions,
            "partitions_per_topic": args.partitions_per_topic,
            "records_per_partition": args.records, "cycles": args.cycles,
            "requests": args.requests, "cache_ttl": args.cache_ttl,
            "kafka_timeout": args.kafka_timeout, "no_timestamps": args.no_timestamps,
        },
        "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "kafka_python": kafka.__version__,
            "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        },
    }
    prefix = args.prefix or (
        f"klagbench-g{args.groups}-p{args.partitions}-n{args.partitions_per_topic}-r{args.records}"
        if args.reuse else f"klagbench-{uuid.uuid4().hex[:6]}")
    figures["prefix"] = prefix

    figures["code"] = code_version()
    broker = None
    started_broker = False
    workdir = None
    remove_workdir = False
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
            figures["broker"] = f"existing broker at {bootstrap}"
            figures["broker_start_s"] = None
        else:
            from devtools.localkafka import LocalBroker

            if args.workdir:
                workdir = pathlib.Path(args.workdir)
            else:
                workdir = pathlib.Path(tempfile.mkdtemp(prefix="klag-bench-"))
                remove_workdir = not args.keep_broker
            t0 = time.perf_counter()
            broker = LocalBroker(workdir)
            was_running = broker.running
            broker.start(timeout=180, detach=args.keep_broker)
            started_broker = not was_running
            figures["broker_start_s"] = time.perf_counter() - t0
            bootstrap = broker.bootstrap
            figures["broker"] = (f"local Kafka {broker.version} at {bootstrap} "
                                 f"({'already running' if was_running else 'started'}, "
                                 f"workdir {workdir})")
            log(f"broker at {bootstrap} ready in {figures['broker_start_s']:.1f}s")

        # Setup in a child process (spawned: a clean interpreter, nothing inherited).
        t0 = time.perf_counter()
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            figures["setup"] = pool.submit(
                setup_cluster, bootstrap, prefix, args.groups, args.partitions,
                args.partitions_per_topic, args.records, args.reuse).result()
        figures["setup_total_s"] = time.perf_counter() - t0

        # The exporter, in this process.
        figures["rss_before_kib"] = rss_kib()
        instrument()
        port = free_port()
        log(f"exporter on http://127.0.0.1:{port}/metrics; {args.cycles} cycles")
        figures.update(run_exporter(exporter_config(bootstrap, prefix, port, args), args))
        figures["broker_rss_kib"] = pid_rss_kib(broker._pid()) if broker is not None else None
    finally:
        if broker is not None and started_broker and not args.keep_broker:
            log("stopping the broker")
            broker.stop()
        elif broker is not None:
            log(f"broker left running at {broker.bootstrap}; stop it with: "
                f"python -m devtools.localkafka stop --dir {workdir}")
        if remove_workdir and workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    figures["total_s"] = time.perf_counter() - began

    if args.json:
        print(json.dumps(figures, indent=2, sort_keys=True))
    else:
        print(summary(figures))
    sys.stdout.flush()
    stuck = [t for t in threading.enumerate()
             if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if stuck:
        # A Kafka call the exporter gave up on (its Deferred timed out) still runs in a
        # worker thread; Python would wait for it at exit.
        log(f"{len(stuck)} worker thread(s) still running a Kafka call the exporter gave up "
            f"on ({', '.join(sorted(t.name for t in stuck))}); exiting without them")
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
