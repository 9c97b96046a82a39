#!/usr/bin/env python3
"""Collection-cycle benchmark for klag-collector (a benchmark, not a test).

Creates G consumer groups over P partitions on a local broker (or an existing one given
with --bootstrap), runs the exporter on the real reactor in a process of its own per size
(--scale runs several sizes one after the other against the same topics), drives N
collection cycles by hand and prints:

- cycle wall time (p50, max) and where each cycle spends it, time from start until every
  row has its time lag; with --scale, steady cycle time per size and per row,
- Kafka requests per cycle by API, timestamp Fetch requests per leader and keys fetched,
- a Kafka probe client's latency while the cold timestamp fetch runs, against idle,
- /metrics latency p50/p99 for identity and gzip, between cycles and while a cycle renders,
- series count, render time of one snapshot, RSS after each cycle,
- process CPU seconds per minute in steady state with 10 s polls, and with --profile the
  top functions of one steady cycle and its render.

    python benchmarks/cycle_bench.py                          # 200 groups x 2,000 partitions
    python benchmarks/cycle_bench.py --cache-ttl 2s --pause 3 # steady cycles after cache_ttl
    python benchmarks/cycle_bench.py --scale 200,600,1200     # 10k, 30k, 60k rows
    python benchmarks/cycle_bench.py --json > figures.json

Everything talks to 127.0.0.1 only (the local broker, the exporter's HTTP port), unless
--bootstrap names another broker. See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import multiprocessing
import os
import pathlib
import platform
import re
import resource
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (HERE, REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import bench_hooks as hooks  # noqa: E402
import bench_report as report  # noqa: E402
from bench_clients import Helper, run_scrape  # noqa: E402
from bench_setup import GroupSet, Layout, drop, log, setup_cluster  # noqa: E402

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"
# Cycles of the 10 s-poll run before its CPU window opens: the cold one and one steady one.
CPU_WARMUP_CYCLES = 2


# ---------------------------------------------------------------------------------------
# Small readings of this process
# ---------------------------------------------------------------------------------------


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


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------
# The code benchmarked: read from .git's files (the bench runs no git command)
# ---------------------------------------------------------------------------------------


def git_head(git: pathlib.Path) -> Optional[str]:
    head = (git / "HEAD").read_text().strip()
    if not head.startswith("ref: "):
        return head
    ref = head[5:]
    if (git / ref).exists():
        return (git / ref).read_text().strip()
    packed = git / "packed-refs"
    if packed.exists():
        for line in packed.read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    return None


def git_index(git: pathlib.Path) -> Dict[str, str]:
    """path -> blob sha1 of the index (versions 2 and 3)."""
    data = (git / "index").read_bytes()
    if data[:4] != b"DIRC" or int.from_bytes(data[4:8], "big") not in (2, 3):
        return {}
    entries, pos, out = int.from_bytes(data[8:12], "big"), 12, {}
    for _ in range(entries):
        sha = data[pos + 40:pos + 60].hex()
        flags = int.from_bytes(data[pos + 60:pos + 62], "big")
        extended = flags & 0x4000
        start = pos + 62 + (2 if extended else 0)
        end = data.index(b"\0", start)
        out[data[start:end].decode()] = sha
        pos += ((end - pos) // 8 + 1) * 8  # entries are NUL-padded to a multiple of 8
    return out


def blob_sha(path: pathlib.Path) -> str:
    import hashlib

    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def code_version() -> str:
    """The commit benchmarked, and which files of klag_collector/ differ from the index."""
    git = REPO / ".git"
    try:
        head = git_head(git)
        index = git_index(git)
    except (OSError, ValueError):
        return "unknown (no readable .git)"
    if not head:
        return "unknown (no HEAD)"
    files = {str(p.relative_to(REPO)): p for p in (REPO / "klag_collector").rglob("*.py")}
    changed = sorted(name for name, p in files.items() if index.get(name) != blob_sha(p))
    changed += sorted(name + " (deleted)" for name in index
                      if name.startswith("klag_collector/") and name.endswith(".py")
                      and name not in files)
    digest = zlib.crc32(b"".join(files[n].read_bytes() for n in sorted(files)))
    tree = f"klag_collector crc32 {digest:08x}"
    if not changed:
        return f"{head[:7]} ({tree})"
    names = ", ".join(c.replace("klag_collector/", "") for c in changed)
    return f"{head[:7]} + uncommitted changes in {names} ({tree})"


# ---------------------------------------------------------------------------------------
# The exporter under test, and what the bench reads of it
# ---------------------------------------------------------------------------------------


def exporter_config(bootstrap: str, layout: Layout, groups: GroupSet, port: int,
                    args: argparse.Namespace, poll_interval: str) -> str:
    group_pattern = json.dumps("^" + re.escape(groups.prefix + "-g"))
    topic_pattern = json.dumps("^" + re.escape(layout.prefix + "-t"))
    return f"""
[exporter]
poll_interval = {json.dumps(poll_interval)}
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
group_whitelist = [{group_pattern}]
topic_whitelist = [{topic_pattern}]
"""


def find_poller(svc: Any, seams: Dict[str, str]) -> Any:
    """The one cluster's poller: a child service of the service tree (Twisted's public
    IServiceCollection), else the service's private list."""
    from twisted.application.service import IServiceCollection

    stack = [svc]
    while stack:
        node = stack.pop()
        if IServiceCollection.providedBy(node):
            stack.extend(node)
        elif hasattr(node, "poll_now"):
            seams["poller"] = "found in the service tree"
            return node
    seams["poller"] = "svc._pollers[0] (not found in the service tree)"
    return svc._pollers[0]


class Exporter:
    """A service made from a config, its one poller and (if found) its renderer."""

    def __init__(self, reactor: Any, config_text: str, seams: Dict[str, str]) -> None:
        from klag_collector.config import parse_config
        from klag_collector.service import make_service

        self.reactor = reactor
        self.config = parse_config(config_text, "<bench>", "toml")
        self.port = self.config.exporter.http_port
        self.svc = make_service(self.config, reactor)
        # The interpreter as klag-collector sets it up for itself, where the checkout does.
        try:
            from klag_collector import interpreter
        except ImportError:
            seams["interpreter"] = "Python's defaults (the checkout has no interpreter.tune)"
        else:
            interpreter.tune()
            seams["interpreter"] = "interpreter.tune(), as klag-collector runs"
        self.poller = find_poller(self.svc, seams)
        # No public seam tells when a render pass is done: the renderer's when_rendered is
        # used while it exists, else the bench waits for the exporter's pools to go idle.
        renderer = getattr(self.svc, "_renderer", None)
        self._when_rendered = getattr(renderer, "when_rendered", None)
        seams["renderer"] = ("svc._renderer.when_rendered" if self._when_rendered
                             else "not found: waits for the exporter's pools to go idle")
        seams["pools"] = ("ThreadPool.callInThreadWithCallback hook" if hooks.WORK.hooked
                          else "svc._pools statistics")
        self.started = False

    def start(self) -> None:
        self.svc.startService()
        self.started = True

    async def rendered(self) -> None:
        if self._when_rendered is not None:
            await self._when_rendered()

    def busy(self) -> int:
        """Work items running or queued in the exporter's thread pools."""
        if hooks.WORK.hooked:
            return hooks.WORK.inflight
        total = 0
        for pool in getattr(self.svc, "_pools", ()):
            stats = pool._team.statistics()
            total += stats.busyWorkerCount + stats.backloggedWorkCount
        return total

    async def idle(self, timeout: float) -> float:
        """Wait until the exporter's pools are idle (at most `timeout` s); return that time."""
        deadline = time.monotonic() + timeout
        while self.busy() and time.monotonic() < deadline:
            await sleep(self.reactor, 0.02)
        if self.busy():
            log(f"warning: exporter threads still busy after {timeout:.0f}s")
        return time.monotonic()

    async def stop(self) -> None:
        if self.started:
            self.started = False
            await self.svc.stopService()


def sleep(reactor: Any, seconds: float) -> Any:
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


def in_thread(func: Any, *args: Any) -> Any:
    """Blocking bench work (helper processes, HTTP reads) in the reactor's own pool."""
    from twisted.internet import threads

    return threads.deferToThread(func, *args)


# -- reading the snapshot -----------------------------------------------------------------


def cache_counts(poller: Any) -> Optional[Tuple[int, int, int, int]]:
    """hits, misses, fetch errors, entries of the poller's timestamp cache, if it has one."""
    cache: Any = getattr(poller, "cache", None)
    try:
        return cache.hits, cache.misses, cache.fetch_errors, cache.stats().entries
    except AttributeError:
        return None


def snapshot_rows(poller: Any) -> Optional[Dict[str, Any]]:
    """Row figures of the poller's current snapshot; None if it has neither partition rows in
    its lag view nor families of compact columns."""
    try:
        view = poller.snapshot.view
        groups = view.groups
        figures = _view_rows(view) if view.partitions else _family_rows(poller.snapshot.families)
        if figures is None:
            return None
        return {
            "groups": len(groups),
            **figures,
            # Groups that lag by offsets yet report max_lag_seconds 0: only their caught-up
            # partitions had a known time lag (every record here is >= 1 minute old).
            "groups_lagging_but_max_lag_seconds_0": sum(
                1 for g in groups if (g.max_lag or 0) > 0 and g.max_lag_seconds == 0),
            "skipped_partitions": dict(view.skipped),
            "skipped_groups": dict(view.skipped_groups),
        }
    except AttributeError:
        return None


def _view_rows(view: Any) -> Dict[str, Any]:
    rows = view.partitions
    return {"partition_rows": len(rows),
            "rows_with_time_lag": sum(1 for r in rows if r.lag_seconds is not None),
            "rows_lag_gt_0": sum(1 for r in rows if r.lag > 0)}


def _family_rows(families: Any) -> Optional[Dict[str, Any]]:
    """The same figures from the lag families, for a snapshot that keeps no partition rows."""
    from klag_collector import metrics

    lag = families.get(metrics.GROUP_LAG.name)
    dated = families.get(metrics.GROUP_LAG_SECONDS.name)
    if lag is None or dated is None or not hasattr(lag, "values"):
        return None
    return {"partition_rows": len(lag.values), "rows_with_time_lag": len(dated.values),
            "rows_lag_gt_0": sum(1 for value in lag.values if value > 0),
            "counted_from": "snapshot families"}


def served_rows(port: int) -> Dict[str, Any]:
    """Row figures counted in the served text, when the snapshot has no lag view (blocking)."""
    from klag_collector import metrics

    text = fetch_body(port, False, False)
    lag = (metrics.GROUP_LAG.name + "{").encode()
    dated = (metrics.GROUP_LAG_SECONDS.name + "{").encode()
    lines = text.split(b"\n")
    return {"partition_rows": sum(1 for line in lines if line.startswith(lag)),
            "rows_with_time_lag": sum(1 for line in lines if line.startswith(dated)),
            "counted_from": "/metrics text"}


def fetch_body(port: int, openmetrics: bool, gzipped: bool) -> bytes:
    """One /metrics body as served, the bytes on the wire (blocking)."""
    import http.client

    headers = {"Accept-Encoding": "gzip" if gzipped else "identity"}
    if openmetrics:
        headers["Accept"] = OPENMETRICS_ACCEPT
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", "/metrics", headers=headers)
        return conn.getresponse().read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------
# One cycle
# ---------------------------------------------------------------------------------------


class CycleRun(NamedTuple):
    figures: Dict[str, Any]
    recorder: hooks.Recorder
    started: float  # monotonic: when the cycle was asked for
    ended: float  # when its Deferred fired
    rendered: float  # when /metrics served it
    render_windows: List[hooks.Window]


async def run_cycle(ex: Exporter, n: int, args: argparse.Namespace, t_base: float) -> CycleRun:
    """One cycle, its render and its leftover work; figures as of its end."""
    rec = hooks.Recorder()
    cache0 = cache_counts(ex.poller)
    hooks.WORK.take()
    hooks.CURRENT = rec
    t0 = time.monotonic()
    try:
        if not ex.started:
            # startService starts the poller's loop, whose first tick (now=True) is cycle 1;
            # poll_now() then answers that cycle's outcome.
            ex.start()
        await ex.poller.poll_now()
        t1 = time.monotonic()
        health = ex.poller.health
        if getattr(health, "consecutive_failures", 0):
            raise RuntimeError(f"cycle {n} failed: {getattr(health, 'last_error', '?')}")
        await ex.rendered()
        t2 = time.monotonic()
        # A Kafka call the cycle gave up on (addTimeout) keeps its worker thread busy: wait
        # for every pool to go idle, still counting its requests for this cycle, so the next
        # cycle and the scrapes start on a quiet process.
        t3 = await ex.idle(args.idle_timeout)
    finally:
        hooks.CURRENT = None
    items = hooks.WORK.take()
    render_items = [(i.started, i.ended) for i in items if i.pool == "klag-render"]
    cycle = cycle_figures(ex, rec, n, cache0)
    cycle.update(wall_s=t1 - t0, render_after_s=t2 - t1, busy_after_s=t3 - t1,
                 started_s=t0 - t_base, ended_s=t1 - t_base,
                 exporter_duration_s=getattr(health, "last_duration", None),
                 render_pass_s=sum(e - s for s, e in render_items) if render_items else None,
                 rss_kib=rss_kib()["vmrss"])
    rows = snapshot_rows(ex.poller)
    if rows is None:
        rows = await in_thread(served_rows, ex.port)
    cycle.update(rows)
    return CycleRun(cycle, rec, t0, t1, t2, render_items or [(t1, t2)])


def cycle_figures(ex: Exporter, rec: hooks.Recorder, n: int,
                  cache0: Optional[Tuple[int, int, int, int]]) -> Dict[str, Any]:
    cycle: Dict[str, Any] = {
        "cycle": n,
        "requests": dict(rec.requests),
        "request_s": dict(rec.request_s),
        "steps": rec.step_figures(),
        "fetch_requests": rec.requests.get("FetchRequest", 0),
        "fetch_requests_by_leader": dict(rec.fetch_by_node),
        "fetch_partitions": rec.fetch_partitions,
        "ts_keys_fetched": rec.fetch_keys,
    }
    cache1 = cache_counts(ex.poller)
    if cache0 is not None and cache1 is not None:
        cycle.update(ts_cache_hits=cache1[0] - cache0[0], ts_cache_misses=cache1[1] - cache0[1],
                     ts_fetch_errors=cache1[2] - cache0[2], ts_cache_entries=cache1[3])
    return cycle


def log_cycle(c: Dict[str, Any]) -> None:
    log(f"cycle {c['cycle']}: {c['wall_s'] * 1000:.0f} ms, {sum(c['requests'].values())} requests "
        f"({c['fetch_requests']} Fetch, {c['ts_keys_fetched']} keys), {c['partition_rows']} rows, "
        f"{c['rows_with_time_lag']} with time lag, skipped {c.get('skipped_partitions') or '-'}, "
        f"render {c['render_after_s'] * 1000:.0f} ms, threads busy "
        f"{c['busy_after_s'] * 1000:.0f} ms after the cycle")


# ---------------------------------------------------------------------------------------
# The driven run: cycles by hand (poll_interval 1h), then what is measured between them
# ---------------------------------------------------------------------------------------


async def driven_run(reactor: Any, ex: Exporter, args: argparse.Namespace, topic: str,
                     bootstrap: str, out: Dict[str, Any]) -> None:
    t_base = time.monotonic()
    probe = await start_probe(reactor, args, bootstrap, topic)
    first = await run_cycle(ex, 1, args, t_base)
    log_cycle(first.figures)
    if probe is not None:
        await sleep(reactor, 0.5)
        out["probe"] = await finish_probe(probe, first, args)
    runs = [first]
    for n in range(2, args.cycles + 1):
        if args.pause > 0:
            await sleep(reactor, args.pause)
        runs.append(await run_cycle(ex, n, args, t_base))
        log_cycle(runs[-1].figures)
    out["cycles"] = [r.figures for r in runs]
    out["time_to_dated"] = report.time_to_dated(out["cycles"])
    out["rss_after_cycles_kib"] = rss_kib()
    n = args.cycles
    if args.render_scrape_cycles > 0:
        out["render_scrape"] = await render_scrapes(ex, args, n + 1, t_base)
        n += args.render_scrape_cycles
    if args.profile:
        out["profile"] = await profile_cycle(ex, args, n + 1, t_base)
    await served_figures(ex, args, out)


async def start_probe(reactor: Any, args: argparse.Namespace, bootstrap: str,
                      topic: str) -> Optional[Helper]:
    """The Kafka probe helper, warmed up, then left alone for the idle baseline."""
    if args.probe_interval <= 0:
        return None
    log(f"probe: ListOffsets of {topic}[0] every {args.probe_interval * 1000:.0f} ms from a "
        f"separate process; {args.probe_idle:.0f} s idle baseline")
    probe = Helper("probe", bootstrap, topic, str(args.probe_interval))
    await in_thread(probe.wait_ready)
    await sleep(reactor, args.probe_idle)
    return probe


async def finish_probe(probe: Helper, first: CycleRun, args: argparse.Namespace) -> Dict[str, Any]:
    samples = await in_thread(probe.stop)
    fetch = first.recorder.windows.get("source.fetch_timestamps (step 6)", [])
    assert probe.ready_at is not None
    return report.probe_figures(samples, probe.ready_at, first.started, first.ended, fetch,
                                args.probe_interval)


async def render_scrapes(ex: Exporter, args: argparse.Namespace, n: int,
                         t_base: float) -> Dict[str, Any]:
    """Extra cycles with a gzip scrape every few ms from a separate process."""
    log(f"/metrics gzip every {args.render_scrape_interval * 1000:.0f} ms over "
        f"{args.render_scrape_cycles} more cycles, to catch their renders")
    helper = Helper("scrape-loop", str(ex.port), str(args.render_scrape_interval))
    await in_thread(helper.wait_ready)
    runs: List[CycleRun] = []
    try:
        for i in range(args.render_scrape_cycles):
            runs.append(await run_cycle(ex, n + i, args, t_base))
            log_cycle(runs[-1].figures)
            await sleep(ex.reactor, 0.5)
    finally:
        samples = await in_thread(helper.stop)
    windows = [w for r in runs for w in r.render_windows]
    cycles = [(r.started, r.ended) for r in runs]
    figures = report.render_scrape_figures(samples, windows, cycles, args.render_scrape_interval)
    figures["cycles"] = [r.figures for r in runs]
    return figures


async def profile_cycle(ex: Exporter, args: argparse.Namespace, n: int,
                        t_base: float) -> Dict[str, Any]:
    """One steady cycle and its render under cProfile, in every thread that works for it."""
    log("profile: one more cycle and its render under cProfile")
    cpu0 = cpu_seconds()
    hooks.PROFILES.start()
    try:
        # The reactor thread's profile spans the awaits: it sees what the reactor does meanwhile.
        with hooks.PROFILES.active():
            run = await run_cycle(ex, n, args, t_base)
    finally:
        stats = hooks.PROFILES.stop()
    return {"cycle": run.figures["cycle"], "wall_s": run.figures["wall_s"],
            "render_after_s": run.figures["render_after_s"],
            "process_cpu_s": cpu_seconds() - cpu0,
            "top": report.top_functions(stats, args.profile_top, exclude=str(HERE))}


async def served_figures(ex: Exporter, args: argparse.Namespace, out: Dict[str, Any]) -> None:
    """/metrics latency, the served bodies and series, the render of one snapshot."""
    log(f"/metrics: {args.requests} requests identity + {args.requests} gzip "
        f"from a separate process")
    out["metrics_http"] = report.scrape_figures(await in_thread(run_scrape, ex.port, args.requests))
    bodies = {}
    for om in (False, True):
        for gz in (False, True):
            bodies[(om, gz)] = await in_thread(fetch_body, ex.port, om, gz)
    series: Counter[str] = Counter()
    for line in bodies[(False, False)].split(b"\n"):
        if line and not line.startswith(b"#"):
            series[line.split(b"{", 1)[0].split(b" ", 1)[0].decode()] += 1
    out["series"] = sum(series.values())
    out["series_by_family"] = dict(series.most_common())
    out["bodies_bytes"] = {"text": len(bodies[(False, False)]),
                           "text_gzip": len(bodies[(False, True)]),
                           "openmetrics": len(bodies[(True, False)]),
                           "openmetrics_gzip": len(bodies[(True, True)])}
    try:
        out["render"] = await render_timing(ex, args, bodies)
    except (ImportError, AttributeError, TypeError, KeyError) as e:
        out["render"] = {"skipped": f"{type(e).__name__}: {e}"}
        log(f"render timing skipped: {out['render']['skipped']}")
    out["rss_end_kib"] = rss_kib()


# -- the render of one snapshot, timed beside the exporter (internal API, may change) --------


def rendered_body(rendered: Any, openmetrics: bool) -> bytes:
    """The plain body of one format of a render, whichever way Rendered offers it."""
    from klag_collector.render import Variant

    variant = Variant(openmetrics, False)
    for get in (lambda: rendered.body(variant), lambda: rendered.body(openmetrics, False),
                lambda: rendered.bodies[variant]):
        try:
            return bytes(get())
        except (TypeError, AttributeError, KeyError):
            continue
    raise TypeError("Rendered offers no body(Variant), body(openmetrics, gzipped) or bodies")


async def render_timing(ex: Exporter, args: argparse.Namespace,
                        served: Dict[Tuple[bool, bool], bytes]) -> Dict[str, Any]:
    """ReportRenderer.render of the current reports, as the renderer's pass does it.

    The reports are read on the reactor thread, as MetricsRenderer.invalidate reads them. A
    new ReportRenderer each repeat builds the cluster's lag lines from its snapshot; a second
    pass of the same one keeps them, which is what a change of health alone costs.
    """
    from klag_collector import metrics as metrics_mod
    from klag_collector.collector import read_clusters
    from klag_collector.render import ReportRenderer, Variant

    definitions = metrics_mod.families_for(ex.config.exporter.granularity)
    reports = read_clusters([ex.poller], ex.reactor.seconds())

    # render() makes the variants it is asked for (by default what Prometheus asks) and the
    # rest on first request; where it takes `variants`, all four are timed as well.
    every = None
    if "variants" in inspect.signature(ReportRenderer.render).parameters:
        every = frozenset(Variant(om, gz) for om in (False, True) for gz in (False, True))

    def time_render() -> Dict[str, Any]:
        full, kept, four, rendered = [], [], [], None
        for _ in range(args.render_repeats):
            renderer = ReportRenderer(definitions)
            t = time.perf_counter()
            rendered = renderer.render(reports)
            full.append(time.perf_counter() - t)
            t = time.perf_counter()
            renderer.render(reports)
            kept.append(time.perf_counter() - t)
            if every is not None:
                t = time.perf_counter()
                ReportRenderer(definitions).render(reports, every)
                four.append(time.perf_counter() - t)
        same = all(rendered_body(rendered, om) == served[(om, False)] for om in (False, True))
        return {"full": full, "kept": kept, "four": four, "same_as_served": same}

    renders = await in_thread(time_render)
    client = await in_thread(time_prometheus_client, ex.svc.collector, served)
    return {
        "p50_ms": report.pct(renders["full"], 50) * 1000, "min_ms": min(renders["full"]) * 1000,
        "repeats": len(renders["full"]),
        "kept_lag_lines_p50_ms": report.pct(renders["kept"], 50) * 1000,
        "all_four_p50_ms": report.pct(renders["four"], 50) * 1000 if renders["four"] else None,
        "same_as_served": renders["same_as_served"], "clusters": len(reports), **client,
    }


def time_prometheus_client(collector: Any, served: Dict[Tuple[bool, bool], bytes]) -> Dict[str, Any]:
    """prometheus_client's way, for comparison: a CollectorRegistry holding the service's
    public Collector, generate_latest for the text alone, and all four variants its way
    (both encoders, each body gzipped at the exporter's level)."""
    import gzip

    from prometheus_client import CollectorRegistry, exposition
    from prometheus_client.openmetrics import exposition as om_exposition

    try:
        from klag_collector.gzip_pieces import LEVEL as GZIP_LEVEL
    except ImportError:  # a checkout from before gzip_pieces
        try:
            from klag_collector.render import GZIP_LEVEL
        except ImportError:
            GZIP_LEVEL = 6
    registry = CollectorRegistry()
    registry.register(collector)
    t = time.perf_counter()
    text_body = exposition.generate_latest(registry)
    text_only = time.perf_counter() - t
    t = time.perf_counter()
    gzip.compress(exposition.generate_latest(registry), GZIP_LEVEL, mtime=0)
    om_body = om_exposition.generate_latest(registry)
    gzip.compress(om_body, GZIP_LEVEL, mtime=0)
    all_four = time.perf_counter() - t
    return {"text_only_ms": text_only * 1000, "prometheus_client_all_four_ms": all_four * 1000,
            "prometheus_client_text_same": text_body == served[(False, False)],
            "prometheus_client_openmetrics_same": om_body == served[(True, False)]}


# ---------------------------------------------------------------------------------------
# The 10 s-poll run: the exporter's own loop, CPU over a window of steady state
# ---------------------------------------------------------------------------------------


async def cpu_run(ex: Exporter, args: argparse.Namespace) -> Dict[str, Any]:
    """Start the exporter as it runs in production; once its first cycles are done, the
    process CPU seconds (user + sys, every thread) over --cpu-window seconds."""
    log(f"CPU: the exporter's own loop every {args.cpu_poll_interval:g} s; "
        f"window of {args.cpu_window:g} s after {CPU_WARMUP_CYCLES} cycles")
    t0 = time.monotonic()
    ex.start()
    out: Dict[str, Any] = {"poll_interval_s": args.cpu_poll_interval,
                           "warmup_cycles": CPU_WARMUP_CYCLES}
    out["time_to_dated_s"] = await until_dated(ex, t0, args.cpu_poll_interval * 3)
    await ex.rendered()
    await until_cycles(ex, CPU_WARMUP_CYCLES, args.cpu_poll_interval * (CPU_WARMUP_CYCLES + 3))
    await ex.idle(args.idle_timeout)
    rec = hooks.Recorder()
    cpu0, w0 = cpu_seconds(), time.monotonic()
    hooks.CURRENT = rec
    try:
        await sleep(ex.reactor, args.cpu_window)
    finally:
        hooks.CURRENT = None
    cpu, wall = cpu_seconds() - cpu0, time.monotonic() - w0
    reads = rec.steps.get("source.read (steps 1-5)")
    out.update(window_s=wall, cpu_s=cpu, cpu_s_per_min=cpu / wall * 60,
               cycles_started=int(reads[0]) if reads else None,
               requests=sum(rec.requests.values()),
               fetch_requests=rec.requests.get("FetchRequest", 0), ts_keys_fetched=rec.fetch_keys)
    log(f"CPU: {out['cpu_s']:.2f} s over {wall:.0f} s = {out['cpu_s_per_min']:.2f} s per minute "
        f"({out['cycles_started']} cycles)")
    return out


async def until_dated(ex: Exporter, t0: float, timeout: float) -> Optional[float]:
    """Seconds from t0 until a snapshot has a time lag on every row (None: not in time)."""
    seen = None
    while time.monotonic() - t0 < timeout:
        snap = getattr(ex.poller, "snapshot", None)
        if snap is not None and snap is not seen:
            seen = snap
            at = time.monotonic()
            rows = snapshot_rows(ex.poller)
            if rows is None:
                await ex.rendered()
                rows = await in_thread(served_rows, ex.port)
            if rows["partition_rows"] and rows["rows_with_time_lag"] == rows["partition_rows"]:
                return at - t0
        await sleep(ex.reactor, 0.05)
    return None


async def until_cycles(ex: Exporter, cycles: int, timeout: float) -> None:
    """Wait until `cycles` successful cycles have swapped in their snapshot."""
    seen, count, t0 = getattr(ex.poller, "snapshot", None), 1, time.monotonic()
    while count < cycles and time.monotonic() - t0 < timeout:
        await sleep(ex.reactor, 0.1)
        snap = getattr(ex.poller, "snapshot", None)
        if snap is not seen:
            seen, count = snap, count + 1


# ---------------------------------------------------------------------------------------
# One size, in a process of its own (a fresh reactor, its own RSS and CPU figures)
# ---------------------------------------------------------------------------------------


async def drive(reactor: Any, bootstrap: str, layout: Layout, groups: GroupSet,
                args: argparse.Namespace, out: Dict[str, Any]) -> None:
    seams: Dict[str, str] = {}
    out["seams"] = seams
    out["rss_before_kib"] = rss_kib()
    topic = layout.topics()[0][0]
    config = exporter_config(bootstrap, layout, groups, free_port(), args, "1h")
    ex = Exporter(reactor, config, seams)
    hooks.instrument_sampler(getattr(ex.poller, "sampler", None))
    out["cache_ttl_s"] = ex.config.exporter.timestamp_sampling.cache_ttl
    log(f"{groups.size} groups: exporter on http://127.0.0.1:{ex.port}/metrics; "
        f"{args.cycles} cycles")
    try:
        await driven_run(reactor, ex, args, topic, bootstrap, out)
    finally:
        await ex.stop()
    if args.cpu_window > 0:
        poll = f"{args.cpu_poll_interval:g}s"
        ex = Exporter(reactor, exporter_config(bootstrap, layout, groups, free_port(), args, poll),
                      {})
        try:
            out["cpu"] = await cpu_run(ex, args)
        finally:
            await ex.stop()
    out["instrumentation"] = {"patched": hooks.PATCHES.patched, "missing": hooks.PATCHES.missing}


def run_size(bootstrap: str, layout: Layout, groups: GroupSet,
             args: argparse.Namespace) -> Dict[str, Any]:
    """Instrument this process, then drive the exporter on the real reactor."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hooks.instrument()
    for missing in hooks.PATCHES.missing:
        log(f"instrumentation: {missing} not found, its figures are left out")
    from twisted.internet import defer, reactor

    out: Dict[str, Any] = {"groups": groups.size, "group_prefix": groups.prefix}
    outcome: Dict[str, Any] = {}

    def finish(result: Any) -> None:
        outcome["result"] = result
        reactor.stop()

    def start() -> None:
        defer.ensureDeferred(drive(reactor, bootstrap, layout, groups, args, out)).addBoth(finish)

    reactor.callWhenRunning(start)
    reactor.run()
    if "result" not in outcome:
        raise RuntimeError("reactor stopped before the benchmark finished (interrupted?)")
    result = outcome["result"]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return out


def size_process(conn: Any, bootstrap: str, layout: Layout, groups: GroupSet,
                 args: argparse.Namespace) -> None:
    """The child process of one size: sends its figures (or its traceback) and exits."""
    try:
        conn.send(("ok", run_size(bootstrap, layout, groups, args)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
        stuck = [t.name for t in threading.enumerate()
                 if t is not threading.main_thread() and t.is_alive() and not t.daemon]
        if stuck:
            # A Kafka call the exporter gave up on (its Deferred timed out) still runs in a
            # worker thread; Python would wait for it at exit.
            log(f"{len(stuck)} worker thread(s) still running a Kafka call the exporter gave "
                f"up on ({', '.join(sorted(stuck))}); exiting without them")
        os._exit(0)


def run_size_process(bootstrap: str, layout: Layout, groups: GroupSet,
                     args: argparse.Namespace) -> Dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=size_process, args=(send, bootstrap, layout, groups, args),
                       name=f"klag-bench-{groups.size}")
    proc.start()
    send.close()
    try:
        status, payload = receive.recv()
    except EOFError:
        status, payload = "error", f"the size process died (exit code {proc.exitcode})"
    finally:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if status != "ok":
        raise RuntimeError(f"{groups.size} groups: {payload}")
    return payload


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def parse_scale(text: str) -> List[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scale takes group counts like 200,600,1200, "
                                         f"not {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("--scale needs group counts of at least 1")
    return sizes


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark klag-collector's collection cycle and /metrics on a local broker.")
    p.add_argument("--groups", type=int, default=200, help="consumer groups (default 200)")
    p.add_argument("--scale", type=parse_scale, metavar="G1,G2,...",
                   help="run these group counts one after the other over the same partitions "
                        "(e.g. 200,600,1200: 10k, 30k, 60k rows); replaces --groups")
    p.add_argument("--partitions", type=int, default=2000, help="partitions in all (default 2000)")
    p.add_argument("--partitions-per-topic", type=int, default=50,
                   help="partitions per topic (default 50): P/50 topics")
    p.add_argument("--records", type=int, default=10,
                   help="records produced per partition (default 10)")
    p.add_argument("--all-lagging", action="store_true",
                   help="no group at the log end: every row lags and needs a timestamp")
    p.add_argument("--cycles", type=int, default=5, help="collection cycles (default 5)")
    p.add_argument("--pause", type=float, default=0.0, help="seconds between cycles (default 0)")
    p.add_argument("--requests", type=int, default=200,
                   help="/metrics requests per encoding (default 200)")
    p.add_argument("--render-repeats", type=int, default=3,
                   help="timings of the render of one snapshot (default 3)")
    p.add_argument("--render-scrape-cycles", type=int, default=2,
                   help="extra cycles with a gzip scrape every --render-scrape-interval, "
                        "to measure /metrics while a render runs (default 2; 0 skips)")
    p.add_argument("--render-scrape-interval", type=float, default=0.005,
                   help="seconds between those scrapes (default 0.005)")
    p.add_argument("--probe-interval", type=float, default=0.05,
                   help="a Kafka probe's ListOffsets every this many seconds around the cold "
                        "cycle (default 0.05; 0 skips)")
    p.add_argument("--probe-idle", type=float, default=2.0,
                   help="seconds of probe samples before the exporter starts (default 2)")
    p.add_argument("--cpu-window", type=float, default=60.0, metavar="SECONDS",
                   help="CPU window of the 10 s-poll run, after its first cycles (default 60; "
                        "0 skips the run)")
    p.add_argument("--cpu-poll-interval", type=float, default=10.0,
                   help="poll_interval of that run, seconds (default 10)")
    p.add_argument("--profile", action="store_true",
                   help="one more cycle and its render under cProfile; top functions printed")
    p.add_argument("--profile-top", type=int, default=15, help="functions shown (default 15)")
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
                                    "or klagbench-pP-nN-rR[-all] with --reuse)")
    p.add_argument("--drop", action="store_true",
                   help="delete this run's topics and groups at the end (a shared broker)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    args = p.parse_args(argv)
    for name in ("groups", "partitions", "partitions_per_topic", "records", "cycles", "requests",
                 "render_repeats", "profile_top"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.all_lagging and args.records < 2:
        p.error("--all-lagging needs --records of at least 2")
    return args


def params(args: argparse.Namespace, sizes: List[int]) -> Dict[str, Any]:
    return {
        "sizes": sizes, "partitions": args.partitions,
        "partitions_per_topic": args.partitions_per_topic, "records_per_partition": args.records,
        "all_lagging": args.all_lagging, "cycles": args.cycles, "pause_s": args.pause,
        "requests": args.requests, "cache_ttl": args.cache_ttl,
        "kafka_timeout": args.kafka_timeout, "no_timestamps": args.no_timestamps,
        "probe_interval_s": args.probe_interval, "render_scrape_cycles": args.render_scrape_cycles,
        "render_scrape_interval_s": args.render_scrape_interval, "cpu_window_s": args.cpu_window,
        "cpu_poll_interval_s": args.cpu_poll_interval, "profile": args.profile,
    }


class Broker(NamedTuple):
    bootstrap: str
    local: Any  # devtools.localkafka.LocalBroker, or None for --bootstrap
    started: bool  # this run started it
    workdir: Optional[pathlib.Path]
    remove_workdir: bool


def open_broker(args: argparse.Namespace, figures: Dict[str, Any]) -> Broker:
    if args.bootstrap:
        figures["broker"] = f"existing broker at {args.bootstrap}"
        figures["broker_start_s"] = None
        return Broker(args.bootstrap, None, False, None, False)
    from devtools.localkafka import LocalBroker

    remove = False
    if args.workdir:
        workdir = pathlib.Path(args.workdir)
    else:
        workdir = pathlib.Path(tempfile.mkdtemp(prefix="klag-bench-"))
        remove = not args.keep_broker
    t0 = time.perf_counter()
    local = LocalBroker(workdir)
    was_running = local.running
    local.start(timeout=180, detach=args.keep_broker)
    figures["broker_start_s"] = time.perf_counter() - t0
    figures["broker"] = (f"local Kafka {local.version} at {local.bootstrap} "
                         f"({'already running' if was_running else 'started'}, workdir {workdir})")
    log(f"broker at {local.bootstrap} ready in {figures['broker_start_s']:.1f}s")
    return Broker(local.bootstrap, local, not was_running, workdir, remove)


def close_broker(broker: Broker, args: argparse.Namespace) -> None:
    if broker.local is not None and broker.started and not args.keep_broker:
        log("stopping the broker")
        broker.local.stop()
    elif broker.local is not None:
        log(f"broker left running at {broker.bootstrap}; stop it with: "
            f"python -m devtools.localkafka stop --dir {broker.workdir}")
    if broker.remove_workdir and broker.workdir is not None:
        shutil.rmtree(broker.workdir, ignore_errors=True)


def in_child(func: Any, *args: Any) -> Any:
    """func(*args) in a spawned child process (a clean interpreter, nothing inherited), so
    that setup's clients and buffers never count in any figure."""
    with ProcessPoolExecutor(max_workers=1,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(func, *args).result()


def name_prefix(args: argparse.Namespace) -> str:
    if args.prefix:
        return args.prefix
    if args.reuse:
        return (f"klagbench-p{args.partitions}-n{args.partitions_per_topic}-r{args.records}"
                + ("-all" if args.all_lagging else ""))
    return f"klagbench-{uuid.uuid4().hex[:6]}"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    began = time.perf_counter()
    import kafka

    sizes = args.scale or [args.groups]
    prefix = name_prefix(args)
    layout = Layout(prefix, args.partitions, args.partitions_per_topic, args.records,
                    args.all_lagging)
    group_sets = [GroupSet(f"{prefix}-s{g}", g) for g in sizes]
    figures: Dict[str, Any] = {
        "params": params(args, sizes), "prefix": prefix, "code": code_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kafka_python": kafka.__version__,
                    "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg())},
    }
    broker = open_broker(args, figures)
    try:
        t0 = time.perf_counter()
        figures["setup"] = in_child(setup_cluster, broker.bootstrap, layout, group_sets,
                                    args.reuse)
        figures["setup_total_s"] = time.perf_counter() - t0
        figures["sizes"] = [run_size_process(broker.bootstrap, layout, groups, args)
                            for groups in group_sets]
        figures["broker_rss_kib"] = (pid_rss_kib(broker.local._pid())
                                     if broker.local is not None else None)
        if args.drop:
            figures["dropped"] = in_child(drop, broker.bootstrap, layout, group_sets)
    finally:
        close_broker(broker, args)
    figures["total_s"] = time.perf_counter() - began
    figures["goals"] = report.goals(figures)
    print(json.dumps(figures, indent=2, sort_keys=True) if args.json else report.summary(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
