"""Tests for the one definitions module: names, labels, types and derived HELP text."""

from __future__ import annotations

import re

from klag_collector import metrics as m

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# Every MetricDef the module defines, whether or not it made it into a family list.
MODULE_DEFS = [v for v in vars(m).values() if isinstance(v, m.MetricDef)]


def test_every_defined_metric_is_listed_once() -> None:
    """Each MetricDef in the module is in exactly one of the lag or health lists."""
    assert len(MODULE_DEFS) == len(m.ALL_FAMILIES)
    assert set(MODULE_DEFS) == set(m.ALL_FAMILIES)
    assert not set(m.LAG_FAMILIES) & set(m.HEALTH_FAMILIES)


def test_metric_names_are_unique_and_valid() -> None:
    """No two definitions share a name, with or without a counter's _total, and each name is valid."""
    names = [d.name for d in MODULE_DEFS]
    assert len(names) == len(set(names))
    stems = [d.name.removesuffix("_total") for d in MODULE_DEFS]
    assert len(stems) == len(set(stems))
    for name in names:
        assert METRIC_NAME.match(name), name
        assert name.startswith(("kafka_consumergroup_", "kafka_sharegroup_", "kafka_partition_",
                                "kafka_lag_exporter_")), name


def test_label_names_are_valid_and_not_repeated() -> None:
    """Label names are valid, not reserved (__), not repeated, and never cluster_name (set by the base)."""
    for d in MODULE_DEFS:
        assert len(d.labels) == len(set(d.labels)), d.name
        assert m.CLUSTER not in d.labels, d.name
        for label in d.labels:
            assert LABEL_NAME.match(label), (d.name, label)
            assert not label.startswith("__"), (d.name, label)


def test_builtin_labels_hold_cluster_name_and_every_def_label() -> None:
    """BUILTIN_LABELS is cluster_name plus exactly the labels the definitions use."""
    used = {label for d in MODULE_DEFS for label in d.labels}
    assert m.CLUSTER == "cluster_name"
    assert m.BUILTIN_LABELS == used | {"cluster_name"}
    assert {"group", "topic", "partition", "reason", "compaction_detected"} <= m.BUILTIN_LABELS


def test_types_match_the_total_suffix() -> None:
    """Gauges never end in _total; counters always do."""
    for d in MODULE_DEFS:
        assert d.type in ("gauge", "counter"), d.name
        assert d.name.endswith("_total") == (d.type == "counter"), d.name
    assert any(d.type == "counter" for d in MODULE_DEFS)


def test_help_texts_are_present() -> None:
    """Every definition has a one-line HELP text."""
    for d in MODULE_DEFS:
        assert d.help.strip(), d.name
        assert "\n" not in d.help, d.name


def test_group_state_help_lists_every_state_from_the_mapping() -> None:
    """The group state HELP text names every GROUP_STATES entry with its number."""
    for name, number in m.GROUP_STATES.items():
        assert re.search(rf"\b{number} {name}\b", m.GROUP_STATE.help), (number, name)
    assert len(re.findall(r"\b\d+ [A-Z]\w+", m.GROUP_STATE.help)) == len(m.GROUP_STATES)


def test_group_state_numbers_are_distinct_with_unknown_zero() -> None:
    """Each state has its own number and Unknown is 0."""
    assert len(set(m.GROUP_STATES.values())) == len(m.GROUP_STATES)
    assert m.GROUP_STATES["Unknown"] == 0


def test_group_state_value_maps_known_states_and_unknown_to_zero() -> None:
    """Known states map through GROUP_STATES; any other string, or the empty one, is 0."""
    for name, number in m.GROUP_STATES.items():
        assert m.group_state_value(name) == number
    assert m.group_state_value("NotAState") == 0
    assert m.group_state_value("") == 0


def test_topic_granularity_has_no_partition_only_defs() -> None:
    """families_for(TOPIC) is every definition except the partition-only ones, in order."""
    topic = m.families_for(m.Granularity.TOPIC)
    assert not [d.name for d in topic if d.partition_only]
    assert topic == tuple(d for d in m.ALL_FAMILIES if not d.partition_only)
    assert len(topic) < len(m.ALL_FAMILIES)
    assert m.families_for(m.Granularity.PARTITION) == m.ALL_FAMILIES


def test_partition_only_defs_are_the_per_partition_group_families() -> None:
    """Exactly the families labelled with a partition and a group are partition-only."""
    for d in MODULE_DEFS:
        assert d.partition_only == ({m.GROUP, m.PARTITION} <= set(d.labels)), d.name
