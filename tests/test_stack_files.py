"""The files around the exporter: compose stack, Dockerfile, dashboard, alerts, systemd, Kubernetes.

Docker does not run here, so the compose stack is checked for structure: its services and
ports, and that everything it mounts or builds from is in the repository. Every metric a
dashboard panel or an alert names must be one the exporter defines in klag_collector.metrics.
"""

from __future__ import annotations

import configparser
import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest
import yaml

from klag_collector import metrics
from klag_collector.config import load_config

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DASHBOARD = REPO / "grafana" / "dashboards" / "klag-collector.json"
PROM_DIR = REPO / "prometheus"
K8S_DIR = REPO / "contrib" / "kubernetes"
SYSTEMD_UNIT = REPO / "contrib" / "systemd" / "klag-collector.service"

DEFINED_METRICS = frozenset(d.name for d in metrics.ALL_FAMILIES)
METRIC_RE = re.compile(r"\bkafka_[a-z_]+")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed "
                                    "(Debian package `prometheus`)")

# service -> container ports it must publish on the host
EXPECTED_PORTS = {
    "kafka": {9092},
    "klag-collector": {8000},
    "prometheus": {9090},
    "grafana": {3000},
    "kafka-ui": {8080},
    "otel-collector": {4317},
}
EXPECTED_SERVICES = set(EXPECTED_PORTS) | {"kafka-init", "traffic"}

# The seed dashboard's panels, plus the data-loss row.
SEED_PANELS = {
    "Total Consumer Lag", "Max Time Lag", "Exporter Status", "Scrape Duration", "Consumer Groups",
    "Consumer Group Total Lag", "Consumer Group Time Lag",
    "Partition Lag", "Partition Time Lag",
    "Partition Offsets", "Message Rate",
}
DATA_LOSS_PANELS = {"Lag / Retention Ratio", "Data-Loss Partitions", "Messages Lost",
                    "Out-of-Range Partitions", "Offset Out of Range"}

EXPECTED_ALERTS = {
    "KafkaConsumerGroupNearDataLoss", "KafkaConsumerGroupDataLoss", "KafkaConsumerGroupTimeLagHigh",
    "KafkaConsumerGroupOffsetOutOfRange", "KafkaShareGroupTimeLagHigh",
    "KlagCollectorDown", "KlagClusterDown", "KlagClusterStale",
}


def metric_names(text: str) -> Set[str]:
    return set(METRIC_RE.findall(text))


def load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


# --- docker-compose.yml -----------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Dict[str, Any]:
    return load_yaml(COMPOSE)


def published(service: Dict[str, Any]) -> List[Tuple[str, int, int]]:
    """(host address, host port, container port) of each short-syntax port entry."""
    out = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        assert len(parts) == 3, f"port {entry!r} should name the host address"
        out.append((parts[0], int(parts[1]), int(parts[2].split("/")[0])))
    return out


def test_compose_has_the_seed_services_and_klag_collector(compose):
    """docker-compose.yml parses and defines exactly the seed stack's services plus ours."""
    assert set(compose["services"]) == EXPECTED_SERVICES


def test_compose_publishes_the_expected_ports_on_loopback(compose):
    """Each service publishes its well-known port, on 127.0.0.1 only."""
    for name, ports in EXPECTED_PORTS.items():
        entries = published(compose["services"][name])
        assert ports <= {container for _, _, container in entries}, name
        for address, host_port, container_port in entries:
            assert address == "127.0.0.1", (name, address)
            assert host_port == container_port, name


def test_compose_otel_collector_only_in_its_profile(compose):
    """The OTel collector starts only with `--profile otel`; every other service always starts."""
    for name, svc in compose["services"].items():
        expected = ["otel"] if name == "otel-collector" else None
        assert svc.get("profiles") == expected, name


def test_compose_dependencies_name_existing_services(compose):
    """Every depends_on entry refers to a service of the file."""
    services = set(compose["services"])
    for name, svc in compose["services"].items():
        deps = svc.get("depends_on", [])
        assert set(deps) <= services, name


def test_compose_mounts_and_builds_only_files_in_the_repo(compose):
    """Every bind mount source and build context (with its Dockerfile) exists in the repo."""
    named_volumes = set(compose.get("volumes") or {})
    checked = 0
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source in named_volumes:
                continue
            assert source.startswith("./"), f"{name}: bind mount {source!r} outside the repo"
            assert (REPO / source).exists(), f"{name} mounts missing {source}"
            checked += 1
        build = svc.get("build")
        if build is not None:
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (context / dockerfile).is_file(), f"{name} builds from missing {dockerfile}"
            checked += 1
    assert checked >= 8


def test_compose_klag_collector_runs_the_repo_config(compose):
    """klag-collector is built from the Dockerfile and gets compose/klag-collector.toml where CMD reads it."""
    svc = compose["services"]["klag-collector"]
    assert svc["build"]["dockerfile"] == "Dockerfile"
    assert "./compose/klag-collector.toml:/etc/klag/config.toml:ro" in svc["volumes"]
    assert '"-c", "/etc/klag/config.toml"' in DOCKERFILE.read_text()


def test_compose_exporter_config_matches_the_stack(compose):
    """The exporter config is valid and points at the Kafka listener and port compose sets up."""
    config = load_config(str(REPO / "compose" / "klag-collector.toml"), environ={})
    kafka_env = compose["services"]["kafka"]["environment"]
    assert config.exporter.http_port == 8000
    assert config.exporter.poll_interval == 10.0
    assert config.exporter.granularity is metrics.Granularity.PARTITION
    [cluster] = config.clusters
    assert cluster.name == "test-cluster"
    assert cluster.labels == {"environment": "test"}
    assert list(cluster.bootstrap_servers) == ["kafka:29092"]
    assert "PLAINTEXT://kafka:29092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert config.exporter.otel.enabled is False
    enabled = load_config(str(REPO / "compose" / "klag-collector.toml"),
                          environ={"KLAG_OTEL_ENABLED": "true"})
    assert enabled.exporter.otel.enabled is True


def test_compose_creates_the_seed_topics(compose):
    """kafka-init creates test-topic with 6 partitions and high-volume-topic with 3."""
    script = "\n".join(compose["services"]["kafka-init"]["command"])
    assert "test-topic:6" in script and "high-volume-topic:3" in script
    assert compose["services"]["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_traffic_script_fits_the_traffic_module(compose):
    """The traffic service runs compose/traffic.py beside devtools/, which calls Traffic(bootstrap, speed, allow_remote=)."""
    svc = compose["services"]["traffic"]
    assert svc["volumes"] == ["./compose/traffic.py:/opt/klag/traffic.py:ro",
                              "./devtools:/opt/klag/devtools:ro"]
    assert svc["entrypoint"] == ["python", "/opt/klag/traffic.py"]
    source = (REPO / "compose" / "traffic.py").read_text()
    compile(source, "compose/traffic.py", "exec")
    from devtools import traffic
    params = inspect.signature(traffic.Traffic).parameters
    assert {"bootstrap", "speed", "allow_remote"} <= set(params)
    assert dict(traffic.TOPICS) == {"test-topic": 6, "high-volume-topic": 3}
    assert set(traffic.GROUPS) == {"test-consumer-group", "high-volume-consumer"}


# --- Dockerfile -------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_klag_collector_image():
    """The Dockerfile starts from python:3.11-slim, runs klag-collector as a non-root user on port 8000."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert 'ENTRYPOINT ["klag-collector"]' in text
    assert 'CMD ["-c", "/etc/klag/config.toml"]' in text
    assert re.search(r"^EXPOSE 8000$", text, re.M)
    [user] = re.findall(r"^USER (\S+)$", text, re.M)
    assert user.split(":")[0] not in ("0", "root")


def test_image_installs_the_otel_extra_the_compose_profile_needs():
    """The image installs the package's `otel` extra by default, so KLAG_OTEL_ENABLED=true can push."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert "opentelemetry-sdk" in setup["options.extras_require"]["otel"]
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG EXTRAS=otel$", text, re.M)
    assert 'pip install "${wheel}${EXTRAS:+[$EXTRAS]}"' in text


def test_dockerignore_keeps_what_the_wheel_needs():
    """.dockerignore leaves the package, the twistd plugin and the build metadata in the context."""
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for needed in ("klag_collector", "twisted", "twisted/plugins", "setup.cfg", "pyproject.toml"):
        assert needed not in ignored
        assert (REPO / needed).exists()
    for source in re.findall(r"^COPY (?!--from)(\S+) ", DOCKERFILE.read_text(), re.M):
        assert (REPO / source).exists()


# --- Grafana ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> Dict[str, Any]:
    with DASHBOARD.open() as f:
        return json.load(f)


def all_panels(dash: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dash: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(panel title, expr) of every panel target."""
    return [(p["title"], t["expr"]) for p in all_panels(dash) for t in p.get("targets", [])]


def test_dashboard_has_every_seed_panel_and_the_data_loss_row(dashboard):
    """The dashboard JSON is valid and has the seed's panels, the data-loss row and unique ids."""
    titles = [p["title"] for p in all_panels(dashboard)]
    assert SEED_PANELS | DATA_LOSS_PANELS <= set(titles)
    assert {"Overview", "Lag over time", "Per partition", "Partition offsets", "Data loss",
            "Share groups"} <= set(titles)
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "klag-collector"


def test_dashboard_panels_do_not_overlap(dashboard):
    """No two panels share a grid cell, and all fit in Grafana's 24 columns."""
    cells: Set[Tuple[int, int]] = set()
    for p in all_panels(dashboard):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, p["title"]
        cells |= mine


def test_dashboard_queries_name_only_exported_metrics(dashboard):
    """Every metric in every panel query and variable query is one the exporter defines."""
    texts = [expr for _, expr in queries(dashboard)]
    texts += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    named = set().union(*(metric_names(t) for t in texts))
    assert named <= DEFINED_METRICS, named - DEFINED_METRICS
    for title, expr in queries(dashboard):
        assert metric_names(expr), f"panel {title!r} queries no exporter metric: {expr}"
    # The families the seed dashboard is about are all on it.
    for d in (metrics.GROUP_SUM_LAG, metrics.GROUP_MAX_LAG_SECONDS, metrics.UP,
              metrics.SCRAPE_DURATION, metrics.GROUP_LAG, metrics.GROUP_LAG_SECONDS,
              metrics.PARTITION_LATEST_OFFSET, metrics.GROUP_OFFSET,
              metrics.GROUP_LAG_RETENTION_RATIO, metrics.DATA_LOSS_PARTITIONS,
              metrics.GROUP_MESSAGES_LOST, metrics.GROUP_OFFSET_OUT_OF_RANGE,
              metrics.OFFSET_OUT_OF_RANGE_PARTITIONS, metrics.SHARE_GROUP_SUM_LAG,
              metrics.SHARE_GROUP_MAX_LAG_SECONDS, metrics.SHARE_GROUP_LAG,
              metrics.SHARE_GROUP_STATE, metrics.SHARE_GROUP_MEMBERS):
        assert d.name in named, d.name


def test_dashboard_has_cluster_group_topic_variables(dashboard):
    """The variables cluster, group and topic are label_values queries on exporter metrics."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name, label in (("cluster", metrics.CLUSTER), ("group", metrics.GROUP),
                        ("topic", metrics.TOPIC)):
        v = variables[name]
        assert v["type"] == "query"
        assert re.fullmatch(rf"label_values\((kafka_[a-z_]+)?(\{{.*\}})?, {label}\)", v["definition"])
        assert metric_names(v["definition"]), v["definition"]
        assert v["query"]["query"] == v["definition"]
        assert v["includeAll"] and v["multi"]
    # The group variable lists share groups (KIP-932) as well as consumer groups.
    assert {metrics.GROUP_SUM_LAG.name, metrics.SHARE_GROUP_SUM_LAG.name} <= metric_names(
        variables["group"]["definition"])


REPLICA_PANELS = {"Shards Owned per Replica", "Rebalances"}


def test_dashboard_aggregates_across_sharded_replicas(dashboard):
    """With [exporter.sharding] a group's series come from whichever replica owns its shard:
    every query aggregates, keeping no replica label (instance, pod) but in the panels about
    the replicas themselves, which show the shards each owns."""
    for title, expr in queries(dashboard):
        assert re.match(r"(sum|max|min|count)\b", expr), (title, expr)
        kept = set().union(*(set(re.split(r",\s*", g)) for g in re.findall(r"by \(([^)]*)\)", expr)))
        replica_labels = kept & {"instance", "pod"}
        assert not replica_labels or title in REPLICA_PANELS, (title, expr)
    named = set().union(*(metric_names(expr) for _, expr in queries(dashboard)))
    assert {metrics.SHARDS_OWNED.name, metrics.REBALANCES.name} <= named


VAR_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def test_dashboard_references_only_defined_variables(dashboard):
    """Every $variable a panel or variable uses is defined by the dashboard or built into Grafana."""
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    used: Set[str] = set()
    for p in list(all_panels(dashboard)) + dashboard["templating"]["list"]:
        text = json.dumps({k: v for k, v in p.items() if k != "panels"})
        used |= {next(g for g in m.groups() if g) for m in VAR_RE.finditer(text)}
    builtins = {u for u in used if u.startswith("__")}
    assert {"cluster", "group", "topic", "datasource"} <= used
    assert used - builtins <= defined, (used - builtins) - defined
    assert builtins <= {"__rate_interval", "__interval", "__range", "__all"}


@pytest.mark.subprocess
@needs_promtool
def test_dashboard_queries_are_valid_promql(dashboard, tmp_path):
    """Each panel query, variables substituted, passes promtool's PromQL parser."""
    rules = [{"record": f"dashboard:query_{i}",
              "expr": expr.replace("$__rate_interval", "1m").replace("$cluster", ".*")
                          .replace("$group", ".*").replace("$topic", ".*")}
             for i, (_, expr) in enumerate(queries(dashboard))]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(rules)} rules found" in run.stdout


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus(compose):
    """The provisioned datasource is the compose Prometheus and the dashboard folder is the mounted one."""
    ds = load_yaml(REPO / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert [(d["type"], d["url"]) for d in ds] == [("prometheus", "http://prometheus:9090")]
    [provider] = load_yaml(REPO / "grafana/provisioning/dashboards/dashboards.yml")["providers"]
    assert "./grafana/dashboards:" + provider["options"]["path"] + ":ro" \
        in compose["services"]["grafana"]["volumes"]


# --- Prometheus -------------------------------------------------------------------


def promtool(*args: str, cwd: Path = PROM_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.subprocess
@needs_promtool
def test_promtool_check_config_passes():
    """promtool check config accepts prometheus/prometheus.yml and its rule file."""
    run = promtool("check", "config", "prometheus.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 1 rule files found" in run.stdout


@pytest.mark.subprocess
@needs_promtool
def test_promtool_check_rules_passes():
    """promtool check rules accepts prometheus/alerts.yml."""
    run = promtool("check", "rules", "alerts.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in run.stdout


@pytest.mark.subprocess
@needs_promtool
def test_promtool_alert_unit_tests_pass():
    """promtool test rules runs prometheus/alerts_test.yml and every case passes."""
    run = promtool("test", "rules", "alerts_test.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_prometheus_scrapes_klag_collector_every_10s(compose):
    """prometheus.yml scrapes the compose klag-collector service every 10 s and loads alerts.yml."""
    cfg = load_yaml(PROM_DIR / "prometheus.yml")
    assert cfg["rule_files"] == ["alerts.yml"]
    [job] = cfg["scrape_configs"]
    assert job["scrape_interval"] == "10s"
    assert job["static_configs"] == [{"targets": ["klag-collector:8000"]}]
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def alert_rules() -> List[Dict[str, Any]]:
    return [r for g in load_yaml(PROM_DIR / "alerts.yml")["groups"] for r in g["rules"]]


def test_alerts_cover_data_loss_time_lag_and_exporter_health():
    """alerts.yml has the expected alerts, each with a severity and a summary."""
    rules = alert_rules()
    assert {r["alert"] for r in rules} == EXPECTED_ALERTS
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"]


def test_alert_expressions_name_only_exported_metrics():
    """Every metric named in an alert expression is one the exporter defines."""
    by_alert = {r["alert"]: metric_names(r["expr"]) for r in alert_rules()}
    named = set().union(*by_alert.values())
    assert named <= DEFINED_METRICS, named - DEFINED_METRICS
    assert by_alert["KafkaConsumerGroupNearDataLoss"] == {metrics.GROUP_LAG_RETENTION_RATIO.name}
    assert by_alert["KafkaConsumerGroupDataLoss"] == {metrics.GROUP_MESSAGES_LOST.name,
                                                      metrics.DATA_LOSS_PARTITIONS.name}
    assert by_alert["KafkaConsumerGroupTimeLagHigh"] == {metrics.GROUP_MAX_LAG_SECONDS.name}
    assert by_alert["KafkaShareGroupTimeLagHigh"] == {metrics.SHARE_GROUP_MAX_LAG_SECONDS.name}
    assert by_alert["KafkaConsumerGroupOffsetOutOfRange"] == {
        metrics.GROUP_OFFSET_OUT_OF_RANGE.name, metrics.OFFSET_OUT_OF_RANGE_PARTITIONS.name}
    assert by_alert["KlagClusterDown"] == {metrics.UP.name}
    assert by_alert["KlagClusterStale"] == {metrics.LAST_UPDATE.name}


def test_alert_unit_tests_fire_and_stay_quiet_for_every_alert():
    """alerts_test.yml has, for each alert, a case where it fires and one where it does not."""
    tests = load_yaml(PROM_DIR / "alerts_test.yml")["tests"]
    fires: Set[str] = set()
    quiet: Set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fires == EXPECTED_ALERTS
    assert quiet == EXPECTED_ALERTS


# --- Kubernetes -------------------------------------------------------------------


def manifests(directory: Path) -> Dict[str, Dict[str, Any]]:
    """The manifests of the YAML files in *directory* (not below it), by kind."""
    docs: Dict[str, Dict[str, Any]] = {}
    for path in sorted(directory.glob("*.yaml")):
        with path.open() as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs[doc["kind"]] = doc
    return docs


@pytest.fixture(scope="module")
def k8s() -> Dict[str, Dict[str, Any]]:
    return manifests(K8S_DIR)


def test_k8s_manifests_parse_with_every_kind(k8s):
    """The manifests parse and hold a ConfigMap, Deployment, Service, ServiceMonitor and kustomization."""
    assert set(k8s) == {"ConfigMap", "Deployment", "Service", "ServiceMonitor", "Kustomization"}
    listed = set(k8s["Kustomization"]["resources"])
    assert listed == {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}


def test_k8s_probes_point_at_health_and_ready(k8s):
    """Liveness probes /health and readiness probes /ready, on the container's http port."""
    [container] = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_k8s_config_map_is_a_valid_config_on_the_probed_port(k8s, tmp_path):
    """The ConfigMap's config.toml loads, listens on the container port, and is mounted where args read it."""
    path = tmp_path / "config.toml"
    path.write_text(k8s["ConfigMap"]["data"]["config.toml"])
    config = load_config(str(path), environ={})
    assert (config.exporter.http_host, config.exporter.http_port) == ("0.0.0.0", 8000)
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][:2] == ["-c", "/etc/klag/config.toml"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert mount["mountPath"] == "/etc/klag"
    [volume] = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == k8s["ConfigMap"]["metadata"]["name"]


def test_k8s_service_and_service_monitor_select_the_pods(k8s):
    """The Service selects the Deployment's pods; the ServiceMonitor selects the Service's http port."""
    pod_labels = k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = k8s["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = k8s["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    assert monitor["endpoints"][0]["path"] == "/metrics"


def test_k8s_pod_runs_as_the_image_user_without_privileges(k8s):
    """The pod runs as the Dockerfile's non-root uid, read-only, with every capability dropped."""
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    [user] = re.findall(r"^USER (\d+)", DOCKERFILE.read_text(), re.M)
    assert pod["securityContext"]["runAsUser"] == int(user)
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = pod["containers"][0]["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                  "capabilities": {"drop": ["ALL"]}}


# --- Kubernetes, scaled out ---------------------------------------------------------

SHARDED_DIR = K8S_DIR / "sharded"


@pytest.fixture(scope="module")
def sharded() -> Dict[str, Dict[str, Any]]:
    return manifests(SHARDED_DIR)


def test_k8s_sharded_manifests_are_a_stateful_set_scraped_pod_by_pod(sharded):
    """sharded/ holds a ConfigMap, a StatefulSet of several replicas, its headless Service and a
    PodMonitor, all listed in its kustomization."""
    assert set(sharded) == {"ConfigMap", "StatefulSet", "Service", "PodMonitor", "Kustomization"}
    listed = set(sharded["Kustomization"]["resources"])
    assert listed == {p.name for p in SHARDED_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    spec = sharded["StatefulSet"]["spec"]
    assert spec["replicas"] >= 2
    assert spec["serviceName"] == sharded["Service"]["metadata"]["name"]
    assert sharded["Service"]["spec"]["clusterIP"] == "None"
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    monitor = sharded["PodMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= pod_labels.items()
    [endpoint] = monitor["podMetricsEndpoints"]
    [container] = spec["template"]["spec"]["containers"]
    assert (endpoint["port"], endpoint["path"]) == (container["ports"][0]["name"], "/metrics")
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}


def test_k8s_sharded_config_shares_the_groups_through_kafka(sharded, tmp_path):
    """Its config loads with mode = "kafka" on the container's port, mounted where args read it;
    the static alternative it describes loads too, with the pod's ordinal as its shard."""
    from klag_collector.config import ShardMode

    text = sharded["ConfigMap"]["data"]["config.toml"]
    path = tmp_path / "config.toml"
    path.write_text(text)
    config = load_config(str(path), environ={})
    assert config.exporter.sharding is not None
    assert config.exporter.sharding.mode is ShardMode.KAFKA
    pod = sharded["StatefulSet"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["ports"][0]["containerPort"] == config.exporter.http_port
    assert container["args"][:2] == ["-c", "/etc/klag/config.toml"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == sharded["ConfigMap"]["metadata"]["name"]
    replicas = sharded["StatefulSet"]["spec"]["replicas"]
    # The commented alternative, as the table's only keys.
    keys = re.findall(r"^\s*# ((?:mode|shard) = .*)$", text, re.M)
    assert keys == ['mode = "static"', 'shard = "${POD_INDEX}/3"']
    static = re.sub(r"\[exporter\.sharding\]\n.*?(?=\n\s*\[)",
                    "[exporter.sharding]\n" + "\n".join(keys), text, flags=re.S)
    path.write_text(static)
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['apps.kubernetes.io/pod-index']"
    sharding = load_config(str(path), environ={"POD_INDEX": "2"}).exporter.sharding
    assert sharding is not None
    assert (sharding.mode, sharding.shard, sharding.shards) == (ShardMode.STATIC, 2, replicas)


def test_k8s_sharded_pod_runs_like_the_single_one(sharded, k8s):
    """The same image user, security context and probes as the one-replica Deployment."""
    single = k8s["Deployment"]["spec"]["template"]["spec"]
    pod = sharded["StatefulSet"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == single["securityContext"]
    assert pod["containers"][0]["securityContext"] == single["containers"][0]["securityContext"]
    assert pod["containers"][0]["image"] == single["containers"][0]["image"]


# --- systemd ----------------------------------------------------------------------


def unit_settings(text: str) -> Dict[str, List[str]]:
    settings: Dict[str, List[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_has_the_usual_hardening():
    """The unit runs klag-collector with DynamicUser, a read-only system and restricted sockets."""
    s = unit_settings(SYSTEMD_UNIT.read_text())
    expected = {
        "DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "Restart": "on-failure",
        "CapabilityBoundingSet": "", "RestartPreventExitStatus": "2",
    }
    for key, value in expected.items():
        assert s[key] == [value], key
    assert s["MemoryMax"][0].endswith(("M", "G"))
    assert re.fullmatch(r"\S*/klag-collector -c /etc/klag-collector/config\.toml( .*)?",
                        s["ExecStart"][0])
    assert s["ExecStartPre"][0].endswith("--check")
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # SIGHUP reloads the config


@pytest.mark.subprocess
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    """systemd-analyze verify finds no error or unknown setting in the unit."""
    # verify also checks that ExecStart exists: point it at a binary this machine has.
    text = SYSTEMD_UNIT.read_text().replace("/usr/local/bin/klag-collector", shutil.which("true"))
    unit = tmp_path / "klag-collector.service"
    unit.write_text(text)
    run = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == ""
