"""cycle_bench's figures from its samples, the goal list, and the text summary (pure)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

Window = Tuple[float, float]

API_ORDER = ["ApiVersionsRequest", "MetadataRequest", "FindCoordinatorRequest",
             "ListGroupsRequest", "DescribeGroupsRequest", "OffsetFetchRequest",
             "ListOffsetsRequest", "DescribeConfigsRequest", "FetchRequest"]
STEP_ORDER = ["source.read (steps 1-5)", "admin client connect", "admin.list_groups",
              "admin.describe_groups", "admin.list_group_offsets", "admin.describe_topics",
              "admin.list_partition_offsets", "admin.describe_configs",
              "sampler.sample (step 6, total)", "sampler.plan (thread)",
              "sampler fetch fan-out (reactor)", "source.fetch_timestamps (step 6)",
              "record_fetch.read (Fetch rounds)", "consumer connect", "consumer.assign",
              "consumer.seek", "consumer.poll", "consumer.position", "consumer.pause",
              "consumer.close", "sampler.merge (thread)", "build_snapshot (step 7)"]
FETCH_STEP = "source.fetch_timestamps (step 6)"
SAMPLE_STEP = "sampler.sample (step 6, total)"


# -- statistics -------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[k]


def spread(seconds: Sequence[float]) -> Dict[str, Any]:
    """n, p50, p99 and max of latencies, in ms."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(seconds), "p50_ms": pct(seconds, 50) * 1000,
            "p99_ms": pct(seconds, 99) * 1000, "max_ms": max(seconds) * 1000}


def overlaps(start: float, end: float, windows: Iterable[Window]) -> bool:
    return any(start < b and end > a for a, b in windows)


def latencies(samples: Iterable[Dict[str, Any]]) -> List[float]:
    return [s["s"] for s in samples if "error" not in s]


# -- figures of the helpers' samples -----------------------------------------------------------


def probe_figures(samples: List[Dict[str, Any]], ready_at: float, cycle_start: float,
                  cycle_end: float, fetch: List[Window], interval: float) -> Dict[str, Any]:
    """The probe's latency idle (before the exporter started), while the cold cycle's
    timestamp fetch ran, and during the rest of that cycle."""
    idle = [s for s in samples if s["t"] >= ready_at and s["t"] + s["s"] <= cycle_start]
    during = [s for s in samples if overlaps(s["t"], s["t"] + s["s"], fetch)]
    rest = [s for s in samples if overlaps(s["t"], s["t"] + s["s"], [(cycle_start, cycle_end)])
            and s not in during]
    return {"interval_s": interval, "request": "ListOffsets (KafkaConsumer.end_offsets)",
            "idle": spread(latencies(idle)), "during_fetch": spread(latencies(during)),
            "rest_of_cold_cycle": spread(latencies(rest)),
            "errors": sum(1 for s in samples if "error" in s),
            "first_error": next((s["error"] for s in samples if "error" in s), None),
            "fetch_windows": len(fetch), "fetch_window_s": sum(b - a for a, b in fetch)}


def render_scrape_figures(samples: List[Dict[str, Any]], renders: List[Window],
                          cycles: List[Window], interval: float) -> Dict[str, Any]:
    """gzip /metrics latency while a render pass ran, during the rest of the cycles, between
    cycles, and the first scrape that started after each pass (the first to get new bytes)."""
    during = [s for s in samples if overlaps(s["t"], s["t"] + s["s"], renders)]
    outside = [s for s in samples if not overlaps(s["t"], s["t"] + s["s"], renders)]
    in_cycle = [s for s in outside if overlaps(s["t"], s["t"] + s["s"], cycles)]
    idle = [s for s in outside if not overlaps(s["t"], s["t"] + s["s"], cycles)]
    first_after = []
    for _, end in renders:
        later = [s for s in samples if s["t"] >= end and "error" not in s]
        if later:
            first_after.append(min(later, key=lambda s: s["t"])["s"])
    return {"interval_s": interval, "renders": len(renders),
            "render_pass_ms": [(b - a) * 1000 for a, b in renders],
            "during_render": spread(latencies(during)), "outside_render": spread(latencies(outside)),
            "during_cycle": spread(latencies(in_cycle)), "between_cycles": spread(latencies(idle)),
            "first_after_render": spread(first_after),
            "errors": sum(1 for s in samples if "error" in s),
            "not_200": sum(1 for s in samples if s.get("status") not in (None, 200))}


def scrape_figures(scrape: Dict[str, Any]) -> Dict[str, Any]:
    return {
        enc: {**spread(r["latencies_s"]), "requests": len(r["latencies_s"]), "bytes": r["bytes"],
              "status": r["status"], "content_encoding": r["content_encoding"],
              "connections": r["connections"]}
        for enc, r in scrape.items()
    }


def time_to_dated(cycles: List[Dict[str, Any]]) -> Dict[str, Any]:
    """From the first cycle's start until a snapshot, and /metrics, had every row's time lag."""
    c1 = cycles[0]
    for c in cycles:
        if c["partition_rows"] and c["rows_with_time_lag"] == c["partition_rows"]:
            snapshot = c["ended_s"] - c1["started_s"]
            return {"cycle": c["cycle"], "rows": c["partition_rows"], "snapshot_s": snapshot,
                    "served_s": snapshot + c["render_after_s"]}
    return {"cycle": None, "rows": c1["partition_rows"], "snapshot_s": None, "served_s": None}


# The checkout this bench runs from, so that profile rows name files relative to it.
_REPO = str(Path(__file__).resolve().parent.parent) + "/"


def _where(filename: str) -> str:
    for marker in ("site-packages/", _REPO, "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def top_functions(stats: Any, n: int, exclude: str) -> List[Dict[str, Any]]:
    """The n functions with the most cumulative time, leaving out the bench's own wrappers."""
    if stats is None:
        return []
    rows = []
    for (filename, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():
        if filename.startswith(exclude):
            continue
        name = func if filename == "~" else f"{_where(filename)}:{line}({func})"
        rows.append({"function": name, "ncalls": calls, "tottime_s": tottime,
                     "cumtime_s": cumtime})
    rows.sort(key=lambda r: r["cumtime_s"], reverse=True)
    return rows[:n]


# -- the goal list ---------------------------------------------------------------------------


def steady(size: Dict[str, Any]) -> List[Dict[str, Any]]:
    cycles = size["cycles"]
    return cycles[1:] or cycles


def goal_fetch_after_ttl(size: Dict[str, Any]) -> Dict[str, Any]:
    """1: timestamp Fetches of the steady cycles that started at least cache_ttl after the
    cold cycle's fetch ended (no committed offset moves in the bench)."""
    cycles = size["cycles"]
    after = [c for c in cycles[1:]
             if c["started_s"] - cycles[0]["ended_s"] >= size["cache_ttl_s"]]
    return {"cache_ttl_s": size["cache_ttl_s"], "cycles": [c["cycle"] for c in after],
            "fetch_requests": [c["fetch_requests"] for c in after],
            "keys_fetched": [c["ts_keys_fetched"] for c in after], "target": 0,
            "met": bool(after) and all(c["fetch_requests"] == 0 for c in after)}


def goal_cold_fetch(size: Dict[str, Any]) -> Dict[str, Any]:
    """2: the cold cycle's timestamp fetch, and time from start until every row is dated."""
    c1 = size["cycles"][0]
    fetch = c1["steps"].get(FETCH_STEP, {})
    sample = c1["steps"].get(SAMPLE_STEP, {})
    dated = size.get("time_to_dated", {})
    return {"fetch_s": fetch.get("s"), "fetch_calls": fetch.get("calls"),
            "step6_s": sample.get("s"), "keys_fetched": c1["ts_keys_fetched"],
            "fetch_requests_by_leader": c1["fetch_requests_by_leader"],
            "partitions_in_fetches": c1["fetch_partitions"], "rows": c1["partition_rows"],
            "start_to_dated_s": dated.get("snapshot_s"),
            "start_to_dated_served_s": dated.get("served_s"),
            "start_to_dated_own_loop_s": size.get("cpu", {}).get("time_to_dated_s"),
            "own_loop_poll_interval_s": size.get("cpu", {}).get("poll_interval_s")}


def goal_scale(sizes: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """5: steady cycle p50 per size, per 1,000 rows, and that per-row cost against the first."""
    out, base = [], None
    for size in sizes:
        walls = [c["wall_s"] for c in steady(size)]
        rows = size["cycles"][-1]["partition_rows"]
        p50 = pct(walls, 50)
        per_row = p50 / rows if rows else float("nan")
        base = per_row if base is None else base
        renders = [c["render_pass_s"] for c in steady(size) if c.get("render_pass_s")]
        out.append({"groups": size["groups"], "rows": rows, "steady_p50_ms": p50 * 1000,
                    "ms_per_1k_rows": per_row * 1e6, "ratio_per_row": per_row / base,
                    "render_p50_ms": pct(renders, 50) * 1000 if renders else None})
    return out


def goals(figures: Dict[str, Any]) -> Dict[str, Any]:
    sizes = figures["sizes"]

    def each(fn: Callable[[Dict[str, Any]], Any]) -> Dict[str, Any]:
        return {str(s["groups"]): fn(s) for s in sizes}

    def rss3(s: Dict[str, Any]) -> Optional[int]:
        return s["cycles"][2]["rss_kib"] if len(s["cycles"]) >= 3 else None

    return {
        "1_fetch_only_new_offsets": each(goal_fetch_after_ttl),
        "2_cold_fetch": each(goal_cold_fetch),
        "3_cpu_per_minute": each(lambda s: s.get("cpu")),
        "3_profile_top": each(lambda s: s.get("profile", {}).get("top")),
        "4_rss_after_3_cycles_kib": each(rss3),
        "5_scale": goal_scale(sizes),
        "6_probe": each(lambda s: s.get("probe")),
        "7_scrape_while_rendering": each(lambda s: {
            k: v for k, v in (s.get("render_scrape") or {}).items() if k != "cycles"} or None),
    }


# -- the text summary --------------------------------------------------------------------------


def ms(value: Optional[float], digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def mib(kib: Optional[int]) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f} MiB"


def spread_line(name: str, s: Optional[Dict[str, Any]]) -> str:
    if not s or not s.get("n"):
        return f"  {name:<26}   (no sample)"
    return (f"  {name:<26}{s['p50_ms']:9.2f}{s['p99_ms']:9.2f}{s['max_ms']:9.2f}"
            f"{s['n']:8d}")


def header(f: Dict[str, Any]) -> List[str]:
    a = f["params"]
    sampling = "off" if a["no_timestamps"] else f"on (cache_ttl {a['cache_ttl']})"
    s = f["setup"]
    lines = [
        "klag-collector cycle benchmark", "=" * 78,
        f"  broker       {f['broker']}",
        f"  objects      groups {', '.join(str(g) for g in a['sizes'])} over {a['partitions']} "
        f"partitions ({s['topics']} topics of <= {a['partitions_per_topic']}), "
        f"{a['records_per_partition']} records/partition"
        f"{', every row lagging' if a['all_lagging'] else ''}, prefix {f['prefix']}",
        f"  exporter     in-process per size, real reactor, granularity partition, timestamp "
        f"sampling {sampling}, kafka_timeout {a['kafka_timeout']}",
        f"  code         {f['code']}",
        f"  date         {f['date']}",
        f"  machine      {f['machine']['cpus']} CPUs, Python {f['machine']['python']}, "
        f"kafka-python {f['machine']['kafka_python']}, load avg at start "
        f"{f['machine']['loadavg_start']}", "",
        "Setup (not in any figure below)",
    ]
    if f.get("broker_start_s") is not None:
        lines.append(f"  broker start          {f['broker_start_s']:8.1f} s")
    lines += [
        f"  create topics         {s['create_topics_s']:8.1f} s   "
        f"({s['topics'] - s['reused_topics']} created, {s['reused_topics']} reused)",
        f"  produce               {s['produce_s']:8.1f} s   ({s['records_produced']} records)",
    ]
    for g in s["groups"]:
        lines.append(f"  commit group offsets  {g['commit_s']:8.1f} s   ({g['groups_committed']} "
                     f"groups of {g['prefix']}, {g['reused_groups']} reused)")
    lines += [f"  setup total           {f['setup_total_s']:8.1f} s", ""]
    return lines


def cycles_table(size: Dict[str, Any]) -> List[str]:
    cycles = size["cycles"]
    walls = [c["wall_s"] * 1000 for c in cycles]
    lines = [
        "Cycles (wall: poll_now() until its Deferred fires; cycle 1 is cold: new clients, empty cache;",
        "        render, busy: ms after the cycle until /metrics is re-rendered / all worker threads idle;",
        "        fetch: timestamp Fetch requests, keys: keys handed to fetch_timestamps)",
        f"  {'cycle':>5} {'wall ms':>9} {'render':>7} {'busy':>7} {'groups':>7} {'rows':>7} "
        f"{'lag>0':>7} {'time lag':>9} {'ts hit':>7} {'ts miss':>8} {'ts err':>6} {'fetch':>6} "
        f"{'keys':>6} "
        f"{'RSS MiB':>8}  skipped",
    ]
    for c in cycles:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(c.get("skipped_partitions", {}).items()))
        if c.get("skipped_groups"):
            skipped += "; groups " + ", ".join(f"{k}={v}" for k, v in c["skipped_groups"].items())
        lines.append(
            f"  {c['cycle']:>5} {c['wall_s'] * 1000:9.0f} {c['render_after_s'] * 1000:7.0f} "
            f"{c['busy_after_s'] * 1000:7.0f} {c.get('groups', '-'):>7} {c['partition_rows']:7d} "
            f"{c.get('rows_lag_gt_0', '-'):>7} {c['rows_with_time_lag']:9d} "
            f"{c.get('ts_cache_hits', '-'):>7} {c.get('ts_cache_misses', '-'):>8} "
            f"{c.get('ts_fetch_errors', '-'):>6} {c['fetch_requests']:6d} {c['ts_keys_fetched']:6d} {c['rss_kib'] / 1024:8.0f}  "
            f"{skipped or '-'}")
    understated = [c.get("groups_lagging_but_max_lag_seconds_0", 0) for c in cycles]
    if any(understated):
        lines.append(f"  groups with offset lag > 0 but max_lag_seconds 0 (time lag unknown on "
                     f"every lagging partition), per cycle: {understated}")
    warm = walls[1:] or walls
    lines.append(f"  cycle time: p50 {pct(walls, 50):.0f} ms, max {max(walls):.0f} ms over "
                 f"{len(walls)} cycles (warm cycles 2..{len(walls)}: p50 {pct(warm, 50):.0f} ms, "
                 f"max {max(warm):.0f} ms)")
    dated = size["time_to_dated"]
    if dated["cycle"] is None:
        lines.append("  no cycle had a time lag on every row")
    else:
        lines.append(f"  start until every row ({dated['rows']}) had its time lag: snapshot "
                     f"{dated['snapshot_s']:.2f} s, /metrics {dated['served_s']:.2f} s "
                     f"(cycle {dated['cycle']})")
    return lines + [""]


def shown_cycles(cycles: List[Dict[str, Any]]) -> List[int]:
    shown = list(range(len(cycles)))
    return [0, 1, len(cycles) - 1] if len(shown) > 6 else shown


def requests_table(cycles: List[Dict[str, Any]]) -> List[str]:
    shown = shown_cycles(cycles)
    head = "".join(f"{'c' + str(cycles[i]['cycle']):>8}" for i in shown)
    lines = ["Kafka requests per cycle, by API (count; c1 = cold)",
             f"  {'API':<30}{head}{'ms/req c' + str(cycles[-1]['cycle']):>14}"]
    apis = sorted({k for c in cycles for k in c["requests"]},
                  key=lambda k: (API_ORDER.index(k) if k in API_ORDER else 99, k))
    for api in apis:
        row = "".join(f"{cycles[i]['requests'].get(api, 0):8d}" for i in shown)
        n = cycles[-1]["requests"].get(api, 0)
        per = f"{cycles[-1]['request_s'].get(api, 0) / n * 1000:.1f}" if n else "-"
        lines.append(f"  {api:<30}{row}{per:>14}")
    totals = "".join(f"{sum(cycles[i]['requests'].values()):8d}" for i in shown)
    lines.append(f"  {'total':<30}{totals}")
    c1 = cycles[0]
    if c1["fetch_requests"]:
        leaders = ", ".join(f"broker {k}: {v}" for k, v in sorted(c1["fetch_requests_by_leader"].items()))
        lines.append(f"  cold cycle's Fetch requests per leader: {leaders}; "
                     f"{c1['fetch_partitions']} partition reads for {c1['ts_keys_fetched']} keys")
    return lines + [""]


def steps_table(cycles: List[Dict[str, Any]]) -> List[str]:
    shown = shown_cycles(cycles)
    names: List[str] = []
    for c in cycles:
        names += [k for k in c["steps"] if k not in names]
    names.sort(key=lambda k: STEP_ORDER.index(k) if k in STEP_ORDER else 99)
    heads = "".join(f"{'c' + str(cycles[i]['cycle']):>12}" for i in shown)
    lines = ["Where a cycle's time goes (ms; calls in brackets when > 1)",
             f"  {'step':<34}{heads}"]
    for name in names:
        cells = []
        for i in shown:
            st = cycles[i]["steps"].get(name)
            cell = "-" if st is None else (f"{st['s'] * 1000:.0f}"
                                           + (f" [{st['calls']}]" if st["calls"] > 1 else ""))
            cells.append(f"{cell:>12}")
        indent = ("      " if name.startswith(("consumer", "record_fetch"))
                  else "    " if name.startswith(("admin.", "admin ", "sampler.plan",
                                                  "sampler fetch", "sampler.merge",
                                                  "source.fetch"))
                  else "  ")
        lines.append(f"{indent}{name:<{36 - len(indent)}}{''.join(cells)}")
    renders = [None if c.get("render_pass_s") is None else c["render_pass_s"] * 1000
               for c in cycles]
    if any(r is not None for r in renders):
        row = "".join(f"{ms(renders[i]):>12}" for i in shown)
        lines.append(f"  {'render pass (klag-render pool)':<34}{row}")
    return lines + [""]


def http_lines(size: Dict[str, Any]) -> List[str]:
    m = size["metrics_http"]
    lines = [f"/metrics ({m['identity']['requests']} requests per encoding, one keep-alive "
             f"connection, from a separate process, between cycles)",
             f"  {'encoding':<10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'body bytes':>13}"
             f"{'conns':>7}"]
    for enc in ("identity", "gzip"):
        r = m[enc]
        lines.append(f"  {enc:<10}{r['p50_ms']:9.2f}{r['p99_ms']:9.2f}{r['max_ms']:9.2f}"
                     f"{r['bytes']:13d}{r['connections']:7d}")
    rs = size.get("render_scrape")
    if rs:
        lines += [f"/metrics gzip while a cycle renders (a request every "
                  f"{rs['interval_s'] * 1000:.0f} ms from a separate process over "
                  f"{len(rs['cycles'])} more cycles; render passes "
                  f"{', '.join(f'{x:.0f}' for x in rs['render_pass_ms'])} ms)",
                  f"  {'':<26}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'n':>8}",
                  spread_line("during a render", rs["during_render"]),
                  spread_line("during the cycle before it", rs["during_cycle"]),
                  spread_line("between cycles", rs["between_cycles"]),
                  spread_line("first after a render", rs["first_after_render"])]
        if rs["errors"] or rs["not_200"]:
            lines.append(f"  errors {rs['errors']}, answers other than 200: {rs['not_200']}")
    b = size["bodies_bytes"]
    top = ", ".join(f"{k.replace('kafka_consumergroup_', '…')} {v}"
                    for k, v in list(size["series_by_family"].items())[:4])
    lines += [f"  series       {size['series']} (sample lines in the text body)",
              f"               largest families: {top}",
              f"  bodies       text {b['text']} B, gzip {b['text_gzip']} B; OpenMetrics "
              f"{b['openmetrics']} B, gzip {b['openmetrics_gzip']} B (as served)"]
    return lines + render_lines(size["render"]) + [""]


def render_lines(r: Dict[str, Any]) -> List[str]:
    if "skipped" in r:
        return [f"  render       skipped ({r['skipped']})"]
    yes_no = {True: "yes", False: "NO"}
    return [
        f"  render       ReportRenderer.render(reports) of one snapshot ({r['clusters']} "
        f"cluster(s)), in a thread beside the exporter:",
        f"               p50 {r['p50_ms']:.0f} ms, min {r['min_ms']:.0f} ms over {r['repeats']} "
        f"(the variants render() makes by default); again with the lag lines kept "
        f"{r['kept_lag_lines_p50_ms']:.0f} ms; all four variants "
        f"{ms(r.get('all_four_p50_ms'))} ms; bytes as served: {yes_no[r['same_as_served']]}",
        f"               prometheus_client generate_latest(CollectorRegistry with svc.collector): "
        f"text only {r['text_only_ms']:.0f} ms, all four its way "
        f"{r['prometheus_client_all_four_ms']:.0f} ms; same bytes: text "
        f"{yes_no[r['prometheus_client_text_same']]}, OpenMetrics "
        f"{yes_no[r['prometheus_client_openmetrics_same']]}",
    ]


def probe_lines(p: Optional[Dict[str, Any]]) -> List[str]:
    if not p:
        return []
    lines = [f"Kafka probe ({p['request']} every {p['interval_s'] * 1000:.0f} ms from a "
             f"separate process; the cold fetch ran {p['fetch_window_s'] * 1000:.0f} ms in "
             f"{p['fetch_windows']} batch(es))",
             f"  {'':<26}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'n':>8}",
             spread_line("idle, before the start", p["idle"]),
             spread_line("during the cold fetch", p["during_fetch"]),
             spread_line("rest of the cold cycle", p["rest_of_cold_cycle"])]
    if p["errors"]:
        lines.append(f"  {p['errors']} probe requests failed, first: {p['first_error']}")
    return lines + [""]


def profile_lines(p: Optional[Dict[str, Any]]) -> List[str]:
    if not p:
        return []
    lines = [f"Profile of cycle {p['cycle']} and its render (cProfile on thread CPU time, every "
             f"pool work item, kafka-python's network reads and the reactor thread; wall "
             f"{p['wall_s'] * 1000:.0f} ms + render {p['render_after_s'] * 1000:.0f} ms, process "
             f"CPU {p['process_cpu_s']:.2f} s)",
             f"  {'cum s':>7} {'own s':>7} {'calls':>9}  function"]
    for row in p["top"]:
        lines.append(f"  {row['cumtime_s']:7.3f} {row['tottime_s']:7.3f} {row['ncalls']:9d}  "
                     f"{row['function']}")
    return lines + [""]


def cpu_lines(c: Optional[Dict[str, Any]]) -> List[str]:
    if not c:
        return []
    dated = c.get("time_to_dated_s")
    return [f"Steady state with the exporter's own loop (poll_interval {c['poll_interval_s']:g} s, "
            f"no scrapes), after {c['warmup_cycles']} cycles",
            f"  CPU (user+sys, whole process) {c['cpu_s']:.2f} s over {c['window_s']:.0f} s = "
            f"{c['cpu_s_per_min']:.2f} CPU s per minute; {c['cycles_started']} cycles, "
            f"{c['requests']} Kafka requests ({c['fetch_requests']} Fetch, "
            f"{c['ts_keys_fetched']} keys) in the window",
            f"  start until every row had its time lag: "
            f"{'-' if dated is None else f'{dated:.2f} s'}", ""]


def memory_lines(size: Dict[str, Any], broker_rss: Optional[int]) -> List[str]:
    cycles = size["cycles"]
    after3 = f"{mib(cycles[2]['rss_kib'])}" if len(cycles) >= 3 else "- (fewer than 3 cycles)"
    lines = ["Memory (the size's process: exporter + bench instrumentation; setup ran in another)",
             f"  RSS before the exporter      {mib(size['rss_before_kib']['vmrss'])}",
             f"  RSS after 3 cycles           {after3}",
             f"  RSS after the cycles         {mib(size['rss_after_cycles_kib']['vmrss'])}",
             f"  RSS at the end (VmRSS)       {mib(size['rss_end_kib']['vmrss'])}",
             f"  peak (ru_maxrss)             {mib(size['rss_end_kib']['maxrss'])}"]
    if broker_rss is not None:
        lines.append(f"  broker JVM RSS (for scale)   {mib(broker_rss)}")
    return lines + [""]


def size_summary(size: Dict[str, Any], f: Dict[str, Any]) -> List[str]:
    rows = size["cycles"][-1]["partition_rows"]
    lines = [f"--- {size['groups']} groups, {rows} rows " + "-" * 50, ""]
    lines += cycles_table(size) + requests_table(size["cycles"]) + steps_table(size["cycles"])
    lines += probe_lines(size.get("probe")) + http_lines(size) + profile_lines(size.get("profile"))
    lines += cpu_lines(size.get("cpu")) + memory_lines(size, f.get("broker_rss_kib"))
    missing = size["instrumentation"]["missing"]
    if missing:
        lines.append("Instrumentation not installed (names not found; their figures are left "
                     "out): " + "; ".join(missing))
    lines.append("Internals read: " + "; ".join(f"{k}: {v}" for k, v in size["seams"].items()))
    return lines + [""]


def scale_lines(rows: List[Dict[str, Any]]) -> List[str]:
    lines = ["Scale (steady cycles 2..N, same partitions, more groups)",
             f"  {'groups':>7} {'rows':>7} {'p50 ms':>9} {'ms/1k rows':>11} {'ratio/row':>10} "
             f"{'render p50':>11}"]
    for r in rows:
        lines.append(f"  {r['groups']:7d} {r['rows']:7d} {r['steady_p50_ms']:9.0f} "
                     f"{r['ms_per_1k_rows']:11.1f} {r['ratio_per_row']:10.2f} "
                     f"{ms(r['render_p50_ms']):>11}")
    return lines + [""]


def goal_lines(g: Dict[str, Any], sizes: List[int]) -> List[str]:
    """One line per goal and size, in the order the sizes ran."""

    def each(goal: str) -> List[Tuple[str, Any]]:
        return [(str(n), g[goal][str(n)]) for n in sizes]

    lines = ["Goals (per size: [groups] figures)"]
    for groups, v in each("1_fetch_only_new_offsets"):
        lines.append(f"  1 fetch only new offsets [{groups}]: cycles after cache_ttl "
                     f"({v['cache_ttl_s']:g} s) {v['cycles'] or 'none (use --cache-ttl 2s --pause 3)'}"
                     f": Fetch requests {v['fetch_requests']}, keys {v['keys_fetched']} (target 0)")
    for groups, v in each("2_cold_fetch"):
        lines.append(f"  2 cold fetch [{groups}]: {ms(v['fetch_s'], 3)} s for {v['keys_fetched']} "
                     f"keys, Fetch per leader {v['fetch_requests_by_leader']}; start until "
                     f"dated {ms(v['start_to_dated_s'], 2)} s (served "
                     f"{ms(v['start_to_dated_served_s'], 2)} s; the exporter's own loop "
                     f"{ms(v['start_to_dated_own_loop_s'], 2)} s) for {v['rows']} rows")
    for groups, v in each("3_cpu_per_minute"):
        lines.append(f"  3 CPU [{groups}]: "
                     + ("skipped" if not v else f"{v['cpu_s_per_min']:.2f} CPU s per minute "
                        f"with {v['poll_interval_s']:g} s polls"))
    for groups, v in each("4_rss_after_3_cycles_kib"):
        lines.append(f"  4 RSS after 3 cycles [{groups}]: {mib(v)}")
    for r in g["5_scale"]:
        lines.append(f"  5 scale [{r['groups']}]: {r['rows']} rows, steady p50 "
                     f"{r['steady_p50_ms']:.0f} ms, {r['ms_per_1k_rows']:.1f} ms per 1k rows, "
                     f"ratio per row {r['ratio_per_row']:.2f}")
    for groups, v in each("6_probe"):
        if v:
            lines.append(f"  6 probe [{groups}]: p50/p99/max idle {_triple(v['idle'])} ms, during "
                         f"the cold fetch {_triple(v['during_fetch'])} ms")
    for groups, v in each("7_scrape_while_rendering"):
        if v:
            lines.append(f"  7 gzip scrape [{groups}]: p50/p99/max during a render "
                         f"{_triple(v['during_render'])} ms, between cycles "
                         f"{_triple(v['between_cycles'])} ms")
    return lines


def _triple(s: Dict[str, Any]) -> str:
    if not s.get("n"):
        return "-/-/-"
    return f"{s['p50_ms']:.1f}/{s['p99_ms']:.1f}/{s['max_ms']:.1f}"


def summary(f: Dict[str, Any]) -> str:
    lines = header(f)
    for size in f["sizes"]:
        lines += size_summary(size, f)
    if len(f["sizes"]) > 1:
        lines += scale_lines(f["goals"]["5_scale"])
    lines += goal_lines(f["goals"], f["params"]["sizes"])
    lines.append(f"  total bench time {f['total_s']:.0f} s")
    return "\n".join(lines)
