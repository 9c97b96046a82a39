"""Config reload: the pure plan, the service carrying it out, SIGHUP and POST /-/reload."""

from __future__ import annotations

import shutil
import tempfile

import dataclasses
import json
import os
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web.resource import IResource, getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from exporter import (
    ExporterProcess, Samples, env_with_repo, free_port, get, terminate,
)
from fakes import FakeSource, one_partition_data
from kafkahelp import wait_until
from klag_collector import metrics
from klag_collector.config import (
    ClusterConfig, Config, ExporterConfig, NameFilter, OtelConfig, load_config, parse_config,
)
from klag_collector.config_reader import FrozenMap
from klag_collector.errors import ConfigError
from klag_collector.model import GroupInfo
from klag_collector.reload import (
    POLLER_SETTINGS, ReloadPlan, describe_plan, plan_reload, restart_only_settings,
)
from klag_collector.service import make_service
from test_twistd import twistd_command

# -- the plan -------------------------------------------------------------------------


def cluster(name: str, server: str = "k1:9092", **labels: str) -> ClusterConfig:
    return ClusterConfig(
        name=name,
        bootstrap_servers=(server,),
        groups=NameFilter((), ()),
        topics=NameFilter((), ()),
        kafka_args=FrozenMap({}),
        labels=FrozenMap(labels),
    )


def config(*clusters: ClusterConfig, **exporter: Any) -> Config:
    return Config("klag.toml", ExporterConfig(**exporter), clusters)


def plan_names(plan: ReloadPlan) -> Tuple[Tuple[str, ...], ...]:
    return plan.keep, plan.add, plan.remove, plan.replace


def test_the_same_config_keeps_every_cluster() -> None:
    old = config(cluster("a"), cluster("b"))
    plan = plan_reload(old, config(cluster("a"), cluster("b")))
    assert plan_names(plan) == (("a", "b"), (), (), ())
    assert plan.needs_restart == ()
    assert describe_plan(plan) == "kept a, b"


def test_clusters_added_removed_and_changed() -> None:
    old = config(cluster("a"), cluster("b"), cluster("c"))
    new = config(cluster("d"), cluster("c", env="prod"), cluster("a"))
    plan = plan_reload(old, new)
    assert plan_names(plan) == (("a",), ("d",), ("b",), ("c",))
    assert [c.name for c in plan.config.clusters] == ["d", "c", "a"]
    assert describe_plan(plan) == "added d; removed b; replaced c; kept a"


def test_a_changed_server_list_replaces_the_cluster() -> None:
    plan = plan_reload(config(cluster("a")), config(cluster("a", "k2:9092")))
    assert plan_names(plan) == ((), (), (), ("a",))


def test_regexes_and_client_properties_compare_by_value() -> None:
    text = """
[[clusters]]
name = "a"
bootstrap_servers = "k1:9092"
group_whitelist = ["^app-"]
[clusters.consumer_properties]
"security.protocol" = "SASL_PLAINTEXT"
"sasl.mechanism" = "PLAIN"
"sasl.username" = "u"
"sasl.password" = "p"
"""
    old = parse_config(text, "klag.toml", "toml")
    assert plan_names(plan_reload(old, parse_config(text, "klag.toml", "toml"))) == (
        ("a",), (), (), ())
    changed = parse_config(text.replace('"p"', '"q"'), "klag.toml", "toml")
    assert plan_names(plan_reload(old, changed)) == ((), (), (), ("a",))


@pytest.mark.parametrize("setting", [
    {"poll_interval": 10.0},
    {"staleness_threshold": 60.0},
    {"performance": dataclasses.replace(ExporterConfig().performance, kafka_timeout=5.0)},
    {"timestamp_sampling": dataclasses.replace(ExporterConfig().timestamp_sampling,
                                               max_concurrent_fetches=3)},
])
def test_a_poller_setting_replaces_every_cluster(setting: Dict[str, Any]) -> None:
    plan = plan_reload(config(cluster("a"), cluster("b")), config(cluster("a"), cluster("c"),
                                                                   **setting))
    assert plan_names(plan) == ((), ("c",), ("b",), ("a",))
    (name, value), = setting.items()
    assert getattr(plan.config.exporter, name) == value
    assert plan.needs_restart == ()


def test_restart_only_settings_are_reported_and_keep_their_running_value() -> None:
    old = config(cluster("a"))
    new = config(cluster("a"), http_host="127.0.0.1", http_port=9000,
                 granularity=metrics.Granularity.PARTITION, enable_reload_endpoint=True,
                 otel=OtelConfig(endpoint="http://collector:4317"), poll_interval=10.0)
    plan = plan_reload(old, new)
    assert plan.needs_restart == (
        "exporter.http_host", "exporter.http_port", "exporter.granularity",
        "exporter.otel.endpoint", "exporter.enable_reload_endpoint",
    )
    running = plan.config.exporter
    assert (running.http_host, running.http_port, running.granularity, running.otel,
            running.enable_reload_endpoint) == ("0.0.0.0", 8000, metrics.Granularity.TOPIC,
                                                OtelConfig(), False)
    assert running.poll_interval == 10.0
    assert plan_names(plan) == ((), (), (), ("a",))


def test_only_the_restart_only_settings_change_keeps_every_poller() -> None:
    plan = plan_reload(config(cluster("a")), config(cluster("a"), http_port=9000))
    assert plan_names(plan) == (("a",), (), (), ())
    assert plan.needs_restart == ("exporter.http_port",)


def test_every_exporter_key_is_live_or_restart_only() -> None:
    fields = [f.name for f in dataclasses.fields(ExporterConfig)]
    assert set(POLLER_SETTINGS) <= set(fields)
    assert set(restart_only_settings()) == set(fields) - set(POLLER_SETTINGS)
    assert {"http_host", "http_port", "granularity", "ready_requires", "otel",
            "enable_reload_endpoint"} <= set(restart_only_settings())


CLUSTER_VARIANTS = st.builds(
    cluster, st.sampled_from("abcde"), st.sampled_from(["k1:9092", "k2:9092"]),
    env=st.sampled_from(["x", "y"]),
)


def configs() -> st.SearchStrategy[Config]:
    clusters = st.lists(CLUSTER_VARIANTS, min_size=1, max_size=5, unique_by=lambda c: c.name)
    return st.builds(
        lambda cs, poll, port, granularity: config(
            *cs, poll_interval=poll, staleness_threshold=4 * poll, http_port=port,
            granularity=granularity),
        clusters, st.sampled_from([10.0, 30.0]), st.sampled_from([8000, 9000]),
        st.sampled_from(list(metrics.Granularity)),
    )


def poller_settings(exporter: ExporterConfig) -> Tuple[Any, ...]:
    return tuple(getattr(exporter, name) for name in POLLER_SETTINGS)


@given(configs(), configs())
def test_the_plan_accounts_for_every_cluster_once(old: Config, new: Config) -> None:
    plan = plan_reload(old, new)
    before = {c.name: c for c in old.clusters}
    new_names = [c.name for c in new.clusters]
    assert sorted(plan.keep + plan.add + plan.replace) == sorted(new_names)
    assert plan.add == tuple(n for n in new_names if n not in before)
    assert plan.remove == tuple(c.name for c in old.clusters if c.name not in new_names)
    same_settings = poller_settings(old.exporter) == poller_settings(new.exporter)
    for c in new.clusters:
        if c.name in before:
            kept = before[c.name] == c and same_settings
            assert (c.name in plan.keep, c.name in plan.replace) == (kept, not kept)
    assert plan.config.clusters == new.clusters
    assert poller_settings(plan.config.exporter) == poller_settings(new.exporter)
    for name in restart_only_settings():
        assert getattr(plan.config.exporter, name) == getattr(old.exporter, name)
        changed = getattr(old.exporter, name) != getattr(new.exporter, name)
        assert (f"exporter.{name}" in plan.needs_restart) == changed
    # What runs after the reload, read again, changes nothing.
    again = plan_reload(plan.config, plan.config)
    assert plan_names(again) == (tuple(new_names), (), (), ())


# -- the config key ---------------------------------------------------------------------

ONE_CLUSTER = '[[clusters]]\nname = "a"\nbootstrap_servers = "k1:9092"\n'


def test_the_reload_endpoint_is_off_by_default_and_a_boolean() -> None:
    assert not parse_config(ONE_CLUSTER, "klag.toml", "toml").exporter.enable_reload_endpoint
    on = parse_config("[exporter]\nenable_reload_endpoint = true\n" + ONE_CLUSTER, "klag.toml",
                      "toml")
    assert on.exporter.enable_reload_endpoint
    with pytest.raises(ConfigError) as raised:
        parse_config('[exporter]\nenable_reload_endpoint = "sesame"\n' + ONE_CLUSTER,
                     "klag.toml", "toml")
    assert str(raised.value).startswith("klag.toml: exporter.enable_reload_endpoint: ")
    assert "sesame" not in str(raised.value)


def load_error(path: Path) -> str:
    """The one-line error load_config() gives for the file at `path`."""
    with pytest.raises(ConfigError) as raised:
        load_config(str(path))
    return str(raised.value)


# -- the service ------------------------------------------------------------------------

SERVICE_CONFIG = """
[exporter]
poll_interval = "1h"
{exporter}
[exporter.timestamp_sampling]
enabled = false
"""


def cluster_entry(name: str, **labels: str) -> str:
    entry = f'\n[[clusters]]\nname = "{name}"\nbootstrap_servers = "127.0.0.1:9"\n'
    if labels:
        entry += "[clusters.labels]\n" + "".join(f'{k} = "{v}"\n' for k, v in labels.items())
    return entry


def sum_lag(body: bytes, name: str) -> Any:
    return Samples(body.decode()).get(metrics.GROUP_SUM_LAG.name, cluster_name=name, group="g")


def resolve(tree: IResource, path: bytes, method: bytes = b"GET") -> Tuple[DummyRequest, Any]:
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.method = method
    return request, getChildForRequest(tree, request).render(request)


class ServiceReloadTests(TestCase):
    """KlagService.reload on the real reactor, with in-memory sources."""

    def setUp(self) -> None:
        # trial's mktemp() would write under the working directory (the checkout).
        folder = Path(tempfile.mkdtemp(prefix="klag-reload-"))
        self.addCleanup(shutil.rmtree, folder, True)
        self.path = folder / "klag.toml"
        self.sources: List[Tuple[str, FakeSource]] = []

    def write(self, *clusters: str, exporter: str = "") -> None:
        self.path.write_text(SERVICE_CONFIG.format(exporter=exporter) + "".join(clusters))

    def source(self, cluster: ClusterConfig, performance: Any) -> FakeSource:
        made = FakeSource(one_partition_data(GroupInfo("g", "Empty"),
                                             committed=len(self.sources) + 1))
        self.sources.append((cluster.name, made))
        return made

    def service(self) -> Any:
        svc = make_service(load_config(str(self.path)), reactor, serve_http=False,
                           source_factory=self.source)
        svc.startService()
        self.addCleanup(svc.stopService)
        return svc

    @defer.inlineCallbacks
    def metrics_when(self, svc: Any, predicate: Any):  # type: ignore[no-untyped-def]
        for _ in range(500):
            request, body = resolve(svc.root, b"/metrics")
            while body == NOT_DONE_YET and not request.finished:  # made in a worker thread
                yield task.deferLater(reactor, 0.01, lambda: None)
            if body == NOT_DONE_YET:
                body = b"".join(request.written)
            if request.responseCode is None and predicate(body):
                return body
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.fail(f"/metrics never matched: {body!r}")

    def pollers(self, svc: Any) -> Dict[str, Any]:
        return {poller.name: poller for poller in svc.collector.pollers}

    @defer.inlineCallbacks
    def test_kept_clusters_keep_their_poller_snapshot_and_cache(self):  # type: ignore[no-untyped-def]
        """a stays (same poller, snapshot, cache, no new read); b leaves /metrics; c comes."""
        self.write(cluster_entry("a"), cluster_entry("b"))
        svc = self.service()
        yield self.metrics_when(svc, lambda body: sum_lag(body, "a") == 9 and
                                sum_lag(body, "b") == 8)
        a = self.pollers(svc)["a"]
        snapshot, cache = a.snapshot, a.cache
        self.write(cluster_entry("c"), cluster_entry("a"))
        result = yield svc.reload_config_file()
        self.assertEqual((result.plan.keep, result.plan.add, result.plan.remove,
                          result.plan.replace), (("a",), ("c",), ("b",), ()))
        body = yield self.metrics_when(svc, lambda body: sum_lag(body, "c") == 7)
        self.assertIsNone(sum_lag(body, "b"))
        self.assertNotIn(b'cluster_name="b"', body)
        self.assertEqual(sum_lag(body, "a"), 9)
        self.assertEqual(list(self.pollers(svc)), ["c", "a"])
        self.assertIs(self.pollers(svc)["a"], a)
        self.assertIs(a.snapshot, snapshot)
        self.assertIs(a.cache, cache)
        sources = dict(self.sources)
        self.assertEqual(len(sources["a"].reads), 1)
        # The removed cluster's poller stops, closing its clients, in its own thread.
        for _ in range(500):
            if sources["b"].resets:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(sources["b"].resets, 1)
        _, ready = resolve(svc.root, b"/ready")
        self.assertEqual(list(json.loads(ready)["clusters"]), ["c", "a"])

    @defer.inlineCallbacks
    def test_a_changed_cluster_gets_a_new_poller(self):  # type: ignore[no-untyped-def]
        """A cluster whose labels change is read again by a new poller, under its new labels."""
        self.write(cluster_entry("a"))
        svc = self.service()
        yield self.metrics_when(svc, lambda body: sum_lag(body, "a") == 9)
        before = self.pollers(svc)["a"]
        self.write(cluster_entry("a", env="prod"))
        result = yield svc.reload_config_file()
        self.assertEqual(result.plan.replace, ("a",))
        body = yield self.metrics_when(svc, lambda body: b'env="prod"' in body)
        self.assertIsNot(self.pollers(svc)["a"], before)
        self.assertFalse(before.running)
        self.assertEqual(Samples(body.decode()).get(metrics.GROUP_SUM_LAG.name, cluster_name="a",
                                                    group="g", env="prod"), 8)

    @defer.inlineCallbacks
    def test_an_invalid_config_is_refused_and_the_old_one_runs(self):  # type: ignore[no-untyped-def]
        """The refusal is the loader's one line, without the bad value; nothing changes."""
        self.write(cluster_entry("a"))
        svc = self.service()
        yield self.metrics_when(svc, lambda body: sum_lag(body, "a") == 9)
        running = svc.config
        self.path.write_text(self.path.read_text().replace('"1h"', '"sesame"'))
        result = yield svc.reload_config_file()
        self.assertFalse(result.ok)
        self.assertEqual(result.error, load_error(self.path))
        self.assertTrue(result.error.startswith(f"{self.path}: exporter.poll_interval: "))
        self.assertNotIn("sesame", result.error)
        self.assertIs(svc.config, running)
        _, body = resolve(svc.root, b"/metrics")
        self.assertEqual(sum_lag(body, "a"), 9)

    @defer.inlineCallbacks
    def test_post_reload_when_enabled(self):  # type: ignore[no-untyped-def]
        """POST /-/reload: 200 and the changes, 400 and the line; other methods 405."""
        self.write(cluster_entry("a"), exporter="enable_reload_endpoint = true")
        svc = self.service()
        self.write(cluster_entry("a"), cluster_entry("b"),
                   exporter="enable_reload_endpoint = true")
        request, rendered = resolve(svc.root, b"/-/reload", b"POST")
        self.assertEqual(rendered, NOT_DONE_YET)
        yield request.notifyFinish()
        self.assertEqual((request.responseCode or 200, b"".join(request.written)),
                         (200, b"config reloaded: added b; kept a\n"))
        self.path.write_text("[exporter]\n")
        request, _ = resolve(svc.root, b"/-/reload", b"PUT")
        yield request.notifyFinish()
        self.assertEqual((request.responseCode, b"".join(request.written)),
                         (400, load_error(self.path).encode() + b"\n"))
        self.assertEqual([c.name for c in svc.config.clusters], ["a", "b"])
        request, _ = resolve(svc.root, b"/-/reload", b"GET")
        self.assertEqual(request.responseCode, 405)
        request, _ = resolve(svc.root, b"/-/other", b"POST")
        self.assertEqual(request.responseCode, 404)

    def test_post_reload_is_not_found_when_off(self) -> None:
        self.write(cluster_entry("a"))
        svc = make_service(load_config(str(self.path)), reactor, serve_http=False,
                           source_factory=self.source)
        request, _ = resolve(svc.root, b"/-/reload", b"POST")
        self.assertEqual(request.responseCode, 404)


# -- the processes ----------------------------------------------------------------------


def log_lines(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def post(url: str) -> Tuple[int, bytes]:
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def process_config(port: int, clusters: str, exporter: str = "") -> str:
    return f"""
[exporter]
poll_interval = "1s"
http_host = "127.0.0.1"
http_port = {port}
{exporter}
[exporter.performance]
kafka_timeout = "10s"
{clusters}"""


def reload_errors(records: List[Dict[str, Any]]) -> List[str]:
    """The error lines a reload wrote."""
    return [r["message"] for r in records
            if r["level"] == "error" and r["message"].startswith("config reload")]


def broker_cluster(name: str, bootstrap: str) -> str:
    return f'\n[[clusters]]\nname = "{name}"\nbootstrap_servers = "{bootstrap}"\n'


def up(samples: Samples, name: str) -> Any:
    return samples.get(metrics.UP.name, cluster_name=name)


@pytest.mark.broker
def test_sighup_reloads_klag_collector_in_place(kafka, unique, tmp_path) -> None:
    """SIGHUP: the new cluster on /metrics, the old one gone, same port and PID; then an
    invalid file is refused with one error line and the running config keeps serving."""
    port = free_port()
    a, b = f"{unique}-a", f"{unique}-b"
    proc = ExporterProcess(tmp_path, process_config(port, broker_cluster(a, kafka.bootstrap)),
                           port)
    try:
        proc.wait_for(lambda s: up(s, a) == 1, what=f"up for {a}")
        assert post(proc.url("/-/reload"))[0] == 404, "the endpoint is off by default"
        proc.config.write_text(process_config(port, broker_cluster(b, kafka.bootstrap)))
        os.kill(proc.proc.pid, signal.SIGHUP)
        samples = proc.wait_for(lambda s: up(s, b) == 1 and up(s, a) is None,
                                what=f"{b} up and {a} gone")
        assert f'cluster_name="{a}"' not in samples.text
        assert proc.proc.poll() is None
        proc.config.write_text(process_config(port, broker_cluster(b, kafka.bootstrap))
                               .replace('"1s"', '"sesame"'))
        os.kill(proc.proc.pid, signal.SIGHUP)
        wait_until(lambda: reload_errors(log_lines(proc.log)), what="the refusal's log line")
        refused_at = proc.scrape().get(metrics.LAST_UPDATE.name, cluster_name=b)
        # The running config keeps polling every second.
        proc.wait_for(lambda s: s.get(metrics.LAST_UPDATE.name, cluster_name=b) > refused_at,
                      what=f"a cycle of {b} after the refusal")
    finally:
        code = proc.stop()
    records = log_lines(proc.log)
    # A cycle of a busy machine may time out too; what the reload says is one line.
    errors = reload_errors(records)
    assert errors == [f"config reload refused, the running config stays: {load_error(proc.config)}"]
    assert "sesame" not in errors[0]
    assert f"config reloaded from {proc.config}: added {b}; removed {a}" in [
        r["message"] for r in records]
    assert code == 0


# Ports nobody listens on, one per cluster name, so a rewritten file leaves an entry as it was.
DEAD = {"a": free_port(), "b": free_port()}


def dead_clusters(*names: str) -> str:
    """Cluster entries whose broker never answers."""
    return "".join(broker_cluster(name, f"127.0.0.1:{DEAD[name]}") for name in names)


def ready_clusters(url: str) -> List[str]:
    _, body = get(url)
    return list(json.loads(body)["clusters"])


@pytest.mark.subprocess
def test_post_reload_on_a_running_klag_collector(tmp_path) -> None:
    """With enable_reload_endpoint, POST /-/reload (an empty body) reloads: 200, else 400."""
    port = free_port()
    on = "enable_reload_endpoint = true"
    proc = ExporterProcess(tmp_path, process_config(port, dead_clusters("a"), on), port)
    try:
        wait_until(lambda: proc.proc.poll() is None and _answers(proc.url("/health")),
                   what="/health")
        proc.config.write_text(process_config(port, dead_clusters("a", "b"), on))
        assert post(proc.url("/-/reload")) == (200, b"config reloaded: added b; kept a\n")
        assert ready_clusters(proc.url("/ready")) == ["a", "b"]
        proc.config.write_text(process_config(port, "", on))
        status, body = post(proc.url("/-/reload"))
        assert (status, body) == (400, load_error(proc.config).encode() + b"\n")
        assert body.startswith(f"{proc.config}: clusters: ".encode())
        assert ready_clusters(proc.url("/ready")) == ["a", "b"]
        assert get(proc.url("/-/reload"))[0] == 405
    finally:
        assert proc.stop() == 0


def _answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:
        return False


@pytest.mark.subprocess
def test_sighup_reloads_under_twistd(tmp_path) -> None:
    """twistd -n klag: SIGHUP reloads the config file (twistd itself rotates logs on SIGUSR1)."""
    port = free_port()
    config_path = tmp_path / "klag.toml"
    config_path.write_text(process_config(port, dead_clusters("a")))
    logfile = tmp_path / "twistd.log"
    proc = subprocess.Popen(
        twistd_command() + ["-n", f"--pidfile={tmp_path / 'twistd.pid'}", f"--logfile={logfile}",
                            "klag", "-c", str(config_path)],
        cwd=tmp_path, env=env_with_repo(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: proc.poll() is None and _answers(f"http://127.0.0.1:{port}/health"),
                   what="/health")
        config_path.write_text(process_config(port, dead_clusters("a", "b")))
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(lambda: ready_clusters(f"http://127.0.0.1:{port}/ready") == ["a", "b"],
                   what="cluster b in /ready")
        assert proc.poll() is None
    finally:
        code = terminate(proc)
    log = logfile.read_text()
    assert code == -signal.SIGTERM, log
    assert f"config reloaded from {config_path}: added b; kept a" in log
    assert "Traceback" not in log
