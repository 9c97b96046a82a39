"""End to end: the demo (traffic, exporter, Debian's Prometheus) seen through Prometheus's API.

The demo runs shortened against the session broker (--bootstrap), Prometheus scraping every
second. Then, through /api/v1/query_range and /api/v1/rules on 127.0.0.1:
every PromQL target of every dashboard panel (read from the dashboard JSON, its variables
substituted) returns data; test-consumer-group's lag rose during a consumer pause and fell
during the catch-up that followed (phase times from the demo's traffic log); the demo's
consumer-protocol group (KIP-848) and share group (KIP-932), run by the Java drivers, are
seen beside the classic ones; and prometheus/alerts.yml's rules are loaded and evaluated.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from devtools.traffic import (CONSUMER_PHASES, GROUPS, HIGH_VOLUME_TOPIC, JAVA_GROUPS,
                              KIP848_GROUP, SHARE_GROUP, TEST_GROUP, TOPICS)
from klag_collector import metrics

REPO = pathlib.Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "grafana" / "dashboards" / "klag-collector.json"
ALERTS = REPO / "prometheus" / "alerts.yml"

# The classic groups, the consumer-protocol group, the share group: all three kinds.
CONSUMER_GROUPS = {*GROUPS, KIP848_GROUP}
SHARE_GROUPS = {SHARE_GROUP}
DEMO_GROUPS = "|".join([*GROUPS, KIP848_GROUP, SHARE_GROUP])
# Dashboard variables as Grafana would fill them in for the demo.
VARIABLES = {
    "cluster": "local",
    "group": DEMO_GROUPS,
    "topic": ".*",
    "__rate_interval": "30s",
    "__interval": "30s",
    "__range": "30s",
    "__range_s": "30",
}
SPEED = 5
# How stale a value can be in Prometheus: the exporter polls and Prometheus scrapes every 1 s.
PIPELINE_DELAY = 3.0

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("prometheus") is None,
                       reason="needs Debian's prometheus (apt install prometheus)"),
    pytest.mark.skipif(shutil.which("java") is None or shutil.which("javac") is None,
                       reason="the demo's consumer-protocol and share groups need a JDK"),
]

# Never through an *_proxy: everything here is on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- the dashboard -----------------------------------------------------------------


def _panels(panels):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", ()))  # collapsed rows hold their panels


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every PromQL target of the dashboard."""
    board = json.loads(DASHBOARD.read_text())
    return [(panel.get("title", "?"), target.get("refId", "?"), target["expr"])
            for panel in _panels(board["panels"])
            for target in panel.get("targets", ()) if target.get("expr")]


_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\]|\$(\w+)")


def substitute(expr: str) -> str:
    """`expr` with the dashboard variables ($x, ${x}, ${x:fmt}, [[x]]) filled in."""
    def value(m: re.Match) -> str:
        name = next(g for g in m.groups() if g)
        if name not in VARIABLES:
            raise KeyError(f"dashboard variable ${name} has no test value (in {expr!r})")
        return VARIABLES[name]
    return _VARIABLE.sub(value, expr)


def test_substitute_fills_every_variable_spelling():
    assert substitute('rate(x{c=~"$cluster",g=~"${group}"}[$__rate_interval])') == \
        f'rate(x{{c=~"local",g=~"{DEMO_GROUPS}"}}[30s])'
    assert substitute('x{t=~"${topic:regex}", c=~"[[cluster]]"}') == 'x{t=~".*", c=~"local"}'
    with pytest.raises(KeyError, match="nope"):
        substitute("x{a=~\"$nope\"}")


# -- Prometheus's HTTP API -----------------------------------------------------------


def _api(base: str, path: str, **params) -> object:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with _OPENER.open(url, timeout=30) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def _query_range(base: str, expr: str, start: float, end: float, step: float = 1.0) -> list:
    data = _api(base, "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}",
                step=str(step))
    assert data["resultType"] == "matrix"
    return data["result"]


def _values(series: list) -> list[float]:
    return [float(v) for s in series for _, v in s["values"] if not math.isnan(float(v))]


def _points(series: list) -> list[tuple[float, float]]:
    (only,) = series
    return [(float(t), float(v)) for t, v in only["values"]]


def _value_at(points, t: float) -> float | None:
    """The series' value at the last step at or before `t`."""
    before = [v for ts, v in points if ts <= t]
    return before[-1] if before else None


def _between(points, start: float, end: float) -> list[float]:
    return [v for ts, v in points if start <= ts <= end]


# -- the demo process ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    """`python -m devtools.demo` as a child, its output lines stamped with time.time()."""

    def __init__(self, bootstrap: str, workdir: pathlib.Path) -> None:
        self.workdir = workdir
        self.port, self.prometheus_port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.prometheus_port}"
        self.lines: list[tuple[float, str]] = []
        cmd = [sys.executable, "-m", "devtools.demo", "--bootstrap", bootstrap,
               "--dir", str(workdir), "--port", str(self.port),
               "--prometheus-port", str(self.prometheus_port), "--speed", str(SPEED),
               "--scrape-interval", "1s", "--poll-interval", "1s",
               "--minutes", "4"]  # a safety net: the test stops it long before
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._readers = [threading.Thread(target=self._read, args=(f,), daemon=True)
                         for f in (self.proc.stdout, self.proc.stderr)]
        for t in self._readers:
            t.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append((time.time(), line.rstrip("\n")))

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, pattern: str, timeout: float) -> tuple[float, re.Match]:
        """The first output line matching `pattern`: (when it came, match)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, line in list(self.lines):
                m = regex.search(line)
                if m:
                    return when, m
            if self.proc.poll() is not None:
                time.sleep(0.5)  # let the readers drain
                pytest.fail(f"demo exited with {self.proc.returncode} before {pattern!r}:\n"
                            + self.output[-4000:])
            time.sleep(0.2)
        pytest.fail(f"no {pattern!r} from the demo after {timeout:g}s:\n" + self.output[-4000:])

    def consumer_phases(self) -> dict[tuple[int, str], float]:
        """When each (consumer cycle, phase name) began, from the traffic log."""
        started = {}
        for when, line in list(self.lines):
            m = re.search(r"devtools\.traffic: consumer cycle (\d+): (.+)$", line)
            if m:
                started.setdefault((int(m.group(1)), m.group(2)), when)
        return started

    def exporter_state(self) -> str:
        """The exporter's /ready and its own metrics, to say why lag is missing."""
        text = []
        for path in ("/ready", "/metrics"):
            try:
                with _OPENER.open(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                    body = r.read().decode(errors="replace")
            except OSError as e:
                body = f"{type(e).__name__}: {e}"
            if path == "/metrics":
                body = "\n".join(line for line in body.splitlines()
                                 if line.startswith(("kafka_lag_exporter", "kafka_consumergroup_group_sum",
                                                     "kafka_sharegroup_group_sum")))
            text.append(f"--- {path}:\n{body}\n")
        return "".join(text)

    def prometheus_pid(self) -> int | None:
        try:
            return int((self.workdir / "prometheus.pid").read_text())
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM by PID, as a user's Ctrl-C would; the exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            for t in self._readers:
                t.join(5)

    def kill(self) -> None:
        """The last resort of a failed test: nothing the demo started may outlive it."""
        pid = self.prometheus_pid()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if pid and _is_our_prometheus(pid, self.workdir):
            os.kill(pid, signal.SIGKILL)


def _is_our_prometheus(pid: int, workdir: pathlib.Path) -> bool:
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z" and str(workdir / "prometheus.yml").encode() in cmdline


@pytest.fixture
def demo(kafka, tmp_path):
    host = kafka.bootstrap.split(",")[0].rpartition(":")[0]
    if host not in ("127.0.0.1", "localhost", "[::1]", "::1"):
        pytest.skip(f"the demo sends traffic to loopback brokers only, not {kafka.bootstrap}")
    d = Demo(kafka.bootstrap, tmp_path / "demo")
    try:
        yield d
    finally:
        if d.proc.poll() is None or (d.prometheus_pid() and
                                     _is_our_prometheus(d.prometheus_pid(), d.workdir)):
            try:
                d.stop(30)
            except subprocess.TimeoutExpired:
                pass
            d.kill()


# -- the test ------------------------------------------------------------------------


def test_demo_prometheus_sees_every_panel_lag_rising_and_falling_and_the_alert_rules(demo):
    """Shortened demo, Prometheus scraping every second: panels, lag shape, rules."""
    pause_i = next(i for i, p in enumerate(CONSUMER_PHASES) if not p.reads)
    pause = CONSUMER_PHASES[pause_i].name
    catch_up = CONSUMER_PHASES[pause_i + 1].name
    after = CONSUMER_PHASES[(pause_i + 2) % len(CONSUMER_PHASES)].name
    assert any(r.catch_up and r.group == TEST_GROUP for r in CONSUMER_PHASES[pause_i + 1].reads)

    _, m = demo.wait_for(r"prometheus: +(http://127\.0\.0\.1:\d+)", timeout=120)
    base = m.group(1)
    assert base == demo.url
    prometheus_pid = demo.prometheus_pid()
    assert prometheus_pid and _is_our_prometheus(prometheus_pid, demo.workdir)

    # The first scrape comes ~5.5 s after Prometheus starts; then the exporter's first cycle.
    deadline = time.monotonic() + 60
    while True:
        result = _api(base, "query", query='up{job="klag-collector"}')["result"]
        lag = _api(base, "query", query=f'kafka_consumergroup_group_sum_lag{{group="{TEST_GROUP}"}}')
        if result and result[0]["value"][1] == "1" and lag["result"]:
            break
        assert time.monotonic() < deadline, (f"no lag of {TEST_GROUP} scraped yet: {result}\n"
                                             + demo.exporter_state() + demo.output[-4000:])
        time.sleep(0.5)
    first_data = time.time()

    # Two full consumer cycles (pause, catch-up, next phase) after the first data,
    # plus time for the last values to reach Prometheus.
    after_next_cycle = pause_i + 2 >= len(CONSUMER_PHASES)  # catch-up ends a cycle

    def observed_cycles() -> list[tuple[float, float, float]]:
        """(pause, catch-up, next phase) start times of each consumer cycle seen in full."""
        started = demo.consumer_phases()
        cycles = []
        for c in sorted(c for c, name in started if name == pause):
            times = (started[c, pause], started.get((c, catch_up)),
                     started.get((c + after_next_cycle, after)))
            if None not in times and times[0] > first_data:
                cycles.append(times)
        return cycles

    deadline = time.monotonic() + 75
    while len(observed_cycles()) < 2 or time.time() < observed_cycles()[1][2] + PIPELINE_DELAY + 1:
        assert demo.proc.poll() is None, "demo exited early:\n" + demo.output[-4000:]
        assert time.monotonic() < deadline, (
            f"fewer than 2 consumer cycles seen: {demo.consumer_phases()}\n" + demo.output[-3000:])
        time.sleep(0.5)
    start, end = first_data - 5, time.time()

    # (a) Every PromQL target of every dashboard panel returns data over the run.
    # The demo runs one unsharded exporter: the series of the Replicas row exist only with
    # [exporter.sharding] (tests/test_sharding_broker.py reads them), so here they must be absent.
    targets = dashboard_targets()
    assert len(targets) >= 15, targets
    sharding_only = {(title, ref) for title, ref, expr in targets
                     if any(d.name in expr for d in metrics.SHARDING_FAMILIES)}
    assert sharding_only, "the dashboard shows no sharding series"
    empty = {}
    results = {}
    for title, ref, expr in targets:
        query = substitute(expr)
        assert "$" not in query, query
        series = _query_range(base, query, start, end)
        results[title, ref] = series
        if not _values(series):
            empty[title, ref] = query
    missing = [f"{title} [{ref}]: {query}" for (title, ref), query in empty.items()
               if (title, ref) not in sharding_only]
    assert not missing, "dashboard queries without data:\n" + "\n".join(missing)
    assert set(empty) >= sharding_only, "an unsharded exporter reported sharding series"
    _assert_panel_values(results, dict(((t, r), e) for t, r, e in targets))

    # (b) Lag of test-consumer-group rose during a consumer pause and fell during catch-up.
    points = _points(_query_range(
        base, f'sum(kafka_consumergroup_group_sum_lag{{cluster_name="local", group="{TEST_GROUP}"}})',
        start, end, step=0.5))
    assert max(v for _, v in points) > 0, points
    shapes = []
    for t_pause, t_catch_up, t_after in observed_cycles():
        before = _value_at(points, t_pause)
        peak = max(_between(points, t_pause, t_catch_up + PIPELINE_DELAY), default=None)
        low = min(_between(points, t_after, t_after + PIPELINE_DELAY), default=None)
        shapes.append((before, peak, low))
        if None not in (before, peak, low) and peak > before and low < peak:
            break
    else:
        pytest.fail(f"no consumer pause with lag rising, then falling in catch-up "
                    f"(lag before pause, peak, after catch-up): {shapes}\nlag: {points}")

    # (c) The consumer-protocol group is a consumer group like the classic ones: Stable (3),
    # one member, its lag summed; the share group has one member and its start offsets.
    def now(expr: str) -> list:
        return _api(base, "query", query=expr, time=f"{end:.3f}")["result"]

    def last_values(expr: str) -> list[float]:
        return [float(r["value"][1]) for r in now(expr)]

    kip848 = f'{{cluster_name="local", group="{KIP848_GROUP}"}}'
    share = f'{{cluster_name="local", group="{SHARE_GROUP}"}}'
    assert last_values(f"kafka_consumergroup_group_state{kip848}") == [3.0], demo.output[-3000:]
    assert last_values(f"kafka_consumergroup_group_members{kip848}") == [1.0]
    assert len(last_values(f"kafka_consumergroup_group_sum_lag{kip848}")) == 1
    assert not now(f"kafka_sharegroup_group_sum_lag{kip848}")
    assert last_values(f"kafka_sharegroup_group_members{share}") == [1.0], demo.output[-3000:]
    starts = now(f"kafka_sharegroup_group_start_offset{share}")
    share_topic = JAVA_GROUPS[SHARE_GROUP][0]
    assert {(r["metric"]["topic"], r["metric"]["partition"]) for r in starts} == {
        (share_topic, str(p)) for p in range(TOPICS[share_topic])}, starts
    assert max(float(r["value"][1]) for r in starts) > 0, starts  # it accepted records
    assert not now(f"kafka_consumergroup_group_sum_lag{share}")  # not a consumer group
    # Both consume all the time at a pace the producer's bursts outrun: their lag moves.
    for expr in (f"kafka_consumergroup_group_sum_lag{kip848}",
                 f"kafka_sharegroup_group_sum_lag{share}"):
        assert max(_values(_query_range(base, expr, start, end)), default=0) > 0, expr

    # (d) prometheus/alerts.yml's rules are loaded, healthy and evaluated; none fires.
    expected = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"]
                for r in g["rules"] if "alert" in r}
    assert len(expected) >= 5
    rules = {r["name"]: r for g in _api(base, "rules")["groups"] for r in g["rules"]}
    assert expected <= set(rules), f"rules loaded: {sorted(rules)}"
    for name in expected:
        rule = rules[name]
        assert rule["health"] == "ok", rule
        assert not rule["lastEvaluation"].startswith("0001"), rule  # evaluated at least once
    assert rules["KlagCollectorDown"]["state"] == "inactive"
    assert rules["KlagClusterDown"]["state"] == "inactive"
    firing = _api(base, "query", query='ALERTS{alertstate="firing"}')["result"]
    assert firing == [], firing

    # Stopping the demo (SIGTERM) stops its Prometheus by PID too.
    assert demo.stop() == 0, demo.output[-3000:]
    assert not _is_our_prometheus(prometheus_pid, demo.workdir)
    assert not (demo.workdir / "prometheus.pid").exists()
    assert "Traceback" not in demo.output, demo.output[-4000:]
    assert "demo: stopping Prometheus" in demo.output


def _assert_panel_values(results: dict, exprs: dict) -> None:
    """Real values, not only some data: what the demo's traffic must show on each panel."""
    def series_of(metric: str) -> list:
        found = [s for key, s in results.items() if metric in exprs[key]]
        assert found, f"no panel queries {metric}"
        return [x for s in found for x in s]

    def last(series) -> list[float]:
        return [float(s["values"][-1][1]) for s in series]

    assert set(last(series_of("kafka_lag_exporter_up{"))) == {1.0}
    assert all(0 < v < 30 for v in last(series_of("kafka_lag_exporter_scrape_duration_seconds")))
    share_topic = JAVA_GROUPS[SHARE_GROUP][0]
    for key, series in results.items():
        labels = [s["metric"] for s in series]
        is_share = "kafka_sharegroup_" in exprs[key]
        if any("group" in m for m in labels):
            # per-group panels show exactly the demo groups of their kind
            assert {m["group"] for m in labels} == (
                SHARE_GROUPS if is_share else CONSUMER_GROUPS), (key, labels)
        if "partition" in exprs[key] and "group" in exprs[key]:
            # per group and partition: test-topic's 6 and high-volume-topic's 3 (the share
            # group reads high-volume-topic only)
            want = ({(share_topic, str(p)) for p in range(TOPICS[share_topic])} if is_share else
                    {("test-topic", str(p)) for p in range(6)}
                    | {(HIGH_VOLUME_TOPIC, str(p)) for p in range(3)})
            assert {(m["topic"], m["partition"]) for m in labels} == want, (key, labels)
    counts = [key for key in results if exprs[key].startswith("count(")]
    assert counts and all(max(_values(results[k])) == len(CONSUMER_GROUPS) for k in counts), counts
    assert max(_values(series_of("kafka_consumergroup_group_sum_lag"))) > 0
    assert max(_values(series_of("kafka_consumergroup_group_max_lag_seconds"))) > 0
    assert max(_values(series_of("kafka_consumergroup_group_members"))) >= 1
    assert max(_values(series_of("kafka_sharegroup_group_sum_lag"))) > 0
    assert max(_values(series_of("kafka_sharegroup_group_members"))) == 1
    assert max(_values(series_of("kafka_sharegroup_group_max_lag_seconds"))) >= 0
    assert max(_values(series_of("kafka_sharegroup_group_lag{"))) > 0
    produced = [s for k, s in results.items() if "rate(kafka_partition_latest_offset" in exprs[k]]
    consumed = [s for k, s in results.items() if "rate(kafka_consumergroup_group_offset" in exprs[k]]
    assert produced and max(_values(produced[0])) > 0
    assert consumed and max(_values(consumed[0])) > 0
    ratios = _values(series_of("kafka_consumergroup_group_lag_retention_ratio"))
    assert max(ratios) > 0 and all(0 <= r <= 100 for r in ratios)
    # No retention deletes anything in a minute of demo: no data loss shown.
    assert set(_values(series_of("kafka_lag_exporter_data_loss_partitions"))) == {0.0}
    assert set(_values(series_of("kafka_consumergroup_group_messages_lost"))) == {0.0}
