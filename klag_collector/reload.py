"""What a config reload changes: a pure diff of the running and the new Config.

`plan_reload()` decides, per cluster, whether its poller stays (with its snapshot and its
timestamp cache), goes, comes, or is replaced by a new one; and which exporter settings
cannot change while the process runs. KlagService.reload() carries the plan out.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, NamedTuple, Optional, Tuple

from .config import ClusterConfig, Config, ExporterConfig

# The [exporter] keys a cluster's poller and its Kafka edge are built with that may change
# while the process runs (poller.py and kafka_source.py read them; the poller's thread pool is
# sized from timestamp_sampling): when one changes, every cluster gets a new poller.
# Every other key is used once, when the service is made (the site, /ready, OTLP, the reload
# endpoint), so it needs a restart; granularity too, though pollers read it: the families a
# host's registry was told about (LagCollector.describe) and the renderer's follow it. A key
# added to ExporterConfig later is restart-only until it is listed here.
POLLER_SETTINGS = ("poll_interval", "staleness_threshold", "timestamp_sampling", "performance")


def restart_only_settings() -> Tuple[str, ...]:
    """The ExporterConfig fields a reload leaves at their running value."""
    fields = dataclasses.fields(ExporterConfig)
    return tuple(f.name for f in fields if f.name not in POLLER_SETTINGS)


class ReloadPlan(NamedTuple):
    """What a reload does; cluster names in the new file's order, `remove` in the old one's."""

    keep: Tuple[str, ...]
    add: Tuple[str, ...]
    remove: Tuple[str, ...]
    replace: Tuple[str, ...]
    # Key paths ("exporter.http_port") the new file changes that need a restart; ignored.
    needs_restart: Tuple[str, ...]
    # What runs after the reload: the new file, with the restart-only settings left as they were.
    config: Config


def changed_keys(old: Any, new: Any, path: str) -> Tuple[str, ...]:
    """Key paths under `path` whose values differ; nested settings tables key by key."""
    if old == new:
        return ()
    if not (dataclasses.is_dataclass(old) and type(old) is type(new)):
        return (path,)
    return tuple(
        key
        for f in dataclasses.fields(old)
        for key in changed_keys(getattr(old, f.name), getattr(new, f.name), f"{path}.{f.name}")
    )


def _running_exporter(old: ExporterConfig, new: ExporterConfig) -> ExporterConfig:
    """The new settings, but the restart-only ones as they run now."""
    kept = {name: getattr(old, name) for name in restart_only_settings()}
    return dataclasses.replace(new, **kept)


def _poller_settings(exporter: ExporterConfig) -> Tuple[Any, ...]:
    return tuple(getattr(exporter, name) for name in POLLER_SETTINGS)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """How to go from the running `old` config to `new`; pure."""
    exporter = _running_exporter(old.exporter, new.exporter)
    same_settings = _poller_settings(exporter) == _poller_settings(old.exporter)
    before: Dict[str, ClusterConfig] = {c.name: c for c in old.clusters}
    keep, add, replace = [], [], []
    for cluster in new.clusters:
        previous: Optional[ClusterConfig] = before.get(cluster.name)
        if previous is None:
            add.append(cluster.name)
        elif previous == cluster and same_settings:
            keep.append(cluster.name)
        else:
            replace.append(cluster.name)
    after = {c.name for c in new.clusters}
    restart = tuple(
        key
        for name in restart_only_settings()
        for key in changed_keys(
            getattr(old.exporter, name), getattr(new.exporter, name), f"exporter.{name}"
        )
    )
    return ReloadPlan(
        keep=tuple(keep),
        add=tuple(add),
        remove=tuple(c.name for c in old.clusters if c.name not in after),
        replace=tuple(replace),
        needs_restart=restart,
        config=dataclasses.replace(new, exporter=exporter),
    )


def describe_plan(plan: ReloadPlan) -> str:
    """The plan in a few words, for the log and the reload endpoint's answer."""
    parts = [
        f"{verb} {', '.join(names)}"
        for verb, names in (
            ("added", plan.add), ("removed", plan.remove), ("replaced", plan.replace),
            ("kept", plan.keep),
        )
        if names
    ]
    return "; ".join(parts)


class ReloadResult(NamedTuple):
    """A reload's outcome: the plan carried out, or the one-line reason it was refused."""

    plan: Optional[ReloadPlan]
    error: str = ""

    @property
    def ok(self) -> bool:
        """The new config runs now."""
        return self.plan is not None
