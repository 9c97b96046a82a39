"""Cycle time per replica when 1, 2 and 3 replicas share one cluster's groups.

A benchmark, not a test: it builds G groups over P partitions (bench_setup), then for each
replica count N runs the exporter as N sharded replicas and prints each replica's steady
cycle time (`kafka_consumergroup_poll_time_ms`, the median over --cycles cycles after the cold
one), the groups it reported, and the fleet's cycle time (its slowest replica) against one
unsharded exporter's: it should fall about as 1/N. Cycles are counted from the moment every
replica of the fleet is ready (owns its shards and collected them).

--mode static (the default) runs replica i of N (`shard = "i/N"`) alone, one after the other:
on a machine of two cores, N replicas at once would mostly measure their fight for the cores,
and each replica's work is the same whichever way its shard was given. --mode kafka runs the N
replicas at once, sharing the shards through a coordination group, as they run in production.

    python benchmarks/shard_bench.py                       # 2,000 groups, 1/2/3 replicas
    python benchmarks/shard_bench.py --mode kafka --json   # all at once, machine-readable
    python benchmarks/shard_bench.py --bootstrap 127.0.0.1:9092 --reuse
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from typing import Any, Dict, List, Optional, Tuple

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (HERE, REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_setup import GroupSet, Layout, drop, log, setup_cluster  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

CLUSTER = "bench"


def config(args: argparse.Namespace, layout: Layout, groups: GroupSet, port: int,
           sharding: str) -> str:
    return f"""
[exporter]
poll_interval = "{args.poll_interval}s"
http_host = "127.0.0.1"
http_port = {port}
granularity = "partition"
{sharding}
[exporter.timestamp_sampling]
cache_ttl = "10m"
[exporter.performance]
kafka_timeout = "60s"
[[clusters]]
name = "{CLUSTER}"
bootstrap_servers = "{args.bootstrap_used}"
group_whitelist = ["^{groups.prefix}-g"]
topic_whitelist = ["^{layout.prefix}-t"]
"""


def sharding_table(args: argparse.Namespace, replicas: int, index: int, tag: str) -> str:
    if replicas == 1:
        return ""
    if args.mode == "static":
        return f'[exporter.sharding]\nmode = "static"\nshard = "{index}/{replicas}"\n'
    return (f'[exporter.sharding]\nmode = "kafka"\nshards = {args.shards}\n'
            f'coordination_group = "{tag}-coord"\ncoordination_topic = "__{tag}-coord"\n'
            'session_timeout = "10s"\n')


class Replica:
    """One exporter process, and the cycles it was seen to finish."""

    def __init__(self, workdir: pathlib.Path, text: str, port: int) -> None:
        self.port = port
        path = workdir / f"replica-{port}.toml"
        path.write_text(text)
        self.log = open(workdir / f"replica-{port}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "klag_collector", "-c", str(path), "--log-format", "json"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        self.cycles: List[float] = []  # seconds, in order, from the first look at it ready
        self.groups = 0
        self.rows = 0
        self._last_update: Optional[float] = None

    def sample(self) -> None:
        """Note the last cycle's duration if a cycle ended since the last look."""
        if self.proc.poll() is not None:
            raise SystemExit(f"replica on port {self.port} exited; see {self.log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
                text = r.read().decode()
        except OSError:
            return
        values: Dict[str, List[float]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                values.setdefault(s.name, []).append(s.value)
        updated = values.get("kafka_lag_exporter_last_update_timestamp_seconds", [None])[0]
        if updated is None or updated == self._last_update:
            return
        self._last_update = updated
        self.cycles.append(values["kafka_consumergroup_poll_time_ms"][0] / 1000.0)
        self.groups = len(values.get("kafka_consumergroup_group_state", []))
        self.rows = len(values.get("kafka_consumergroup_group_offset", []))

    def ready(self) -> bool:
        """/ready is 200: it owns its shards (kafka: the fleet's rebalances are over) and
        collected them."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=10):
                return True
        except OSError:  # not listening yet, or 503
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(replicas: List[Replica], args: argparse.Namespace) -> None:
    """Once every replica is ready, sample them until each finished --cycles more cycles
    after the one it was seen in first (which may have begun before the last rebalance)."""
    deadline = time.monotonic() + args.timeout
    while not all(r.ready() for r in replicas):
        if time.monotonic() > deadline:
            raise SystemExit(f"the replicas were not all ready within {args.timeout}s")
        time.sleep(0.25)
    while any(len(r.cycles) < args.cycles + 1 for r in replicas):
        if time.monotonic() > deadline:
            raise SystemExit(f"no {args.cycles + 1} cycles within {args.timeout}s")
        for replica in replicas:
            replica.sample()
        time.sleep(0.25)


def figures_of(replica: Replica, args: argparse.Namespace) -> Dict[str, Any]:
    steady = replica.cycles[1:args.cycles + 1]
    return {"groups": replica.groups, "rows": replica.rows,
            "steady_cycle_s": statistics.median(steady), "min_s": min(steady),
            "max_s": max(steady)}


def run_fleet(args: argparse.Namespace, layout: Layout, groups: GroupSet, n: int,
              workdir: pathlib.Path) -> List[Dict[str, Any]]:
    """N replicas, one after the other (static) or all at once (kafka)."""
    tag = f"{groups.prefix}-n{n}-{uuid.uuid4().hex[:4]}"
    batches = [[i] for i in range(n)] if args.mode == "static" else [list(range(n))]
    out: List[Dict[str, Any]] = [{} for _ in range(n)]
    for batch in batches:
        fleet = []
        for i in batch:
            port = free_port()
            text = config(args, layout, groups, port, sharding_table(args, n, i, tag))
            fleet.append(Replica(workdir, text, port))
        try:
            measure(fleet, args)
        finally:
            for replica in fleet:
                replica.stop()
        for i, replica in zip(batch, fleet):
            out[i] = figures_of(replica, args)
            log(f"{n} replica(s), replica {i}: {out[i]['groups']} groups, "
                f"steady cycle {out[i]['steady_cycle_s']:.3f}s")
    return out


def summary(figures: Dict[str, Any]) -> str:
    p = figures["params"]
    lines = [f"shard_bench: {p['groups']} groups over {p['partitions']} partitions, "
             f"mode {p['mode']}, {p['cycles']} steady cycles per replica, "
             f"poll every {p['poll_interval']}s ({figures['broker']})",
             "",
             "replicas  replica  groups  rows    steady cycle s (min-max)",
             ]
    one: Optional[Tuple[float, float]] = None
    for run in figures["runs"]:
        for i, r in enumerate(run["replicas"]):
            lines.append(f"{run['n']:<9} {i:<8} {r['groups']:<7} {r['rows']:<7} "
                         f"{r['steady_cycle_s']:.3f} "
                         f"({r['min_s']:.3f}-{r['max_s']:.3f})")
    lines.append("")
    lines.append("replicas  fleet cycle s (slowest replica: median, min)  vs 1 replica  1/N")
    for run in figures["runs"]:
        slowest = max(r["steady_cycle_s"] for r in run["replicas"])
        fastest_min = max(r["min_s"] for r in run["replicas"])
        one = one or (slowest, fastest_min)
        lines.append(f"{run['n']:<9} {slowest:<.3f}, {fastest_min:<.3f}{'':<31} "
                     f"{slowest / one[0]:.2f}, {fastest_min / one[1]:.2f}{'':<3} "
                     f"{1 / run['n']:.2f}")
    return "\n".join(lines)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, default=2000)
    p.add_argument("--partitions", type=int, default=200)
    p.add_argument("--partitions-per-topic", type=int, default=10)
    p.add_argument("--records", type=int, default=10)
    p.add_argument("--replicas", default="1,2,3", help="replica counts to run, e.g. 1,2,3")
    p.add_argument("--mode", choices=("static", "kafka"), default="static")
    p.add_argument("--shards", type=int, default=64, help="--mode kafka: the shard count")
    p.add_argument("--cycles", type=int, default=5, help="steady cycles measured per replica")
    p.add_argument("--poll-interval", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per fleet at most")
    p.add_argument("--bootstrap", help="use this broker instead of starting one")
    p.add_argument("--workdir", help="the local broker's data directory")
    p.add_argument("--keep-broker", action="store_true")
    p.add_argument("--reuse", action="store_true", help="keep topics and groups that exist")
    p.add_argument("--prefix", help="name prefix of the bench's topics and groups")
    p.add_argument("--drop", action="store_true", help="delete them at the end")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    prefix = args.prefix or (f"klagshardbench-g{args.groups}-p{args.partitions}" if args.reuse
                             else f"klagshardbench-{uuid.uuid4().hex[:6]}")
    layout = Layout(prefix, args.partitions, args.partitions_per_topic, args.records, False)
    groups = GroupSet(f"{prefix}-s{args.groups}", args.groups)
    local = None
    if args.bootstrap:
        args.bootstrap_used, where = args.bootstrap, f"broker at {args.bootstrap}"
    else:
        from devtools.localkafka import LocalBroker

        local = LocalBroker(args.workdir or tempfile.mkdtemp(prefix="klag-shard-bench-"))
        local.start(timeout=180, detach=args.keep_broker)
        args.bootstrap_used, where = local.bootstrap, f"local Kafka {local.version}"
    figures: Dict[str, Any] = {
        "params": {k: v for k, v in vars(args).items() if k != "bootstrap_used"},
        "broker": where, "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count()}
    try:
        figures["setup"] = setup_cluster(args.bootstrap_used, layout, [groups], args.reuse)
        with tempfile.TemporaryDirectory(prefix="klag-shard-bench-") as workdir:
            figures["runs"] = [
                {"n": n, "replicas": run_fleet(args, layout, groups, n, pathlib.Path(workdir))}
                for n in (int(x) for x in args.replicas.split(","))]
        if args.drop:
            figures["dropped"] = drop(args.bootstrap_used, layout, [groups])
    finally:
        if local is not None and not args.keep_broker:
            local.stop()
    print(json.dumps(figures, indent=2, sort_keys=True) if args.json else summary(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
