"""The `klag-collector` command (also `python -m klag_collector`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable, List, Optional, Sequence, cast

from . import __version__, interpreter
from .config import Config, ShardingConfig, ShardMode, load_config
from .errors import ConfigError
from .logs import JSON, LEVELS, TEXT, start_logging

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
FORMATS = ("table", "json", "prometheus")


def parser() -> argparse.ArgumentParser:
    """The command line, as documented in the README."""
    options = argparse.ArgumentParser(
        prog="klag-collector",
        description="Kafka consumer-group lag exporter for Prometheus.",
    )
    options.add_argument("-c", "--config", metavar="FILE", help="TOML or YAML config file")
    options.add_argument("-l", "--log-level", choices=LEVELS, help="default: info; warn with --once")
    options.add_argument("--log-format", choices=(TEXT, JSON), help="default: text on a terminal, else json")
    mode = options.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="validate the config and exit")
    mode.add_argument("--once", action="store_true", help="collect every cluster once, print, exit")
    options.add_argument("--format", choices=FORMATS, default="table", help="output of --once")
    options.add_argument("--version", action="version", version=f"klag-collector {__version__}")
    return options


def summary(config: Config) -> str:
    """What --check prints: what would be monitored, without secrets."""
    exporter = config.exporter
    sampling = exporter.timestamp_sampling
    lines = [
        f"config {config.source} is valid",
        f"listen on {exporter.http_host}:{exporter.http_port}, "
        f"poll every {exporter.poll_interval:g}s, granularity {exporter.granularity.value}, "
        f"stale after {exporter.staleness_threshold:g}s",
        "timestamp sampling: "
        + (
            f"on (cache {sampling.cache_ttl:g}s, {sampling.max_concurrent_fetches} concurrent fetches)"
            if sampling.enabled
            else "off"
        ),
    ]
    if exporter.sharding is not None:
        lines.append("sharding: " + sharding_summary(exporter.sharding))
    for cluster in config.clusters:
        labels = ", ".join(f"{name}={value}" for name, value in cluster.labels.items()) or "none"
        security = cluster.kafka_args.get("security_protocol", "PLAINTEXT")
        lines.append(
            f"cluster {cluster.name}: {','.join(cluster.bootstrap_servers)} ({security}), "
            f"labels: {labels}"
        )
    if config.ignored_keys:
        lines.append(
            "ignored (klag-exporter keys with no effect here): " + ", ".join(config.ignored_keys)
        )
    return "\n".join(lines)


def sharding_summary(sharding: ShardingConfig) -> str:
    """The --check line of [exporter.sharding]."""
    if sharding.mode is ShardMode.STATIC:
        return f"static, shard {sharding.shard} of {sharding.shards}"
    where = (f"on cluster {sharding.coordination_cluster}" if sharding.coordination_cluster
             else "on each cluster")
    return (f"kafka, {sharding.shards} shards, group {sharding.coordination_group} and topic "
            f"{sharding.coordination_topic} {where}, session {sharding.session_timeout:g}s")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse the command line and run; exits with 0, 1 (collection failed) or 2 (bad input)."""
    args = parser().parse_args(argv)
    if not args.config:
        parser().error("-c/--config FILE is required")
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"klag-collector: {e}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    if args.check:
        print(summary(config))
        sys.exit(EXIT_OK)
    # --once prints its result on stdout; progress lines would only get in the way.
    start_logging(args.log_level or ("warn" if args.once else "info"), args.log_format)
    if args.once:
        # A one-shot run joins no coordination group: it reads the whole of every cluster.
        whole = dataclasses.replace(config.exporter, sharding=None)
        sys.exit(run_once(dataclasses.replace(config, exporter=whole), args.format))
    sys.exit(run_forever(config))


def run_once(config: Config, fmt: str) -> int:
    """Collect each cluster once and print the result in `fmt`."""
    from twisted.internet import task

    from . import output
    from .service import Collected, make_service

    result: List[int] = []

    def once(reactor):  # type: ignore[no-untyped-def]
        def show(collected: Collected) -> None:
            if fmt == "json":
                print(output.as_json(collected.clusters))
            elif fmt == "prometheus":
                # The renderer's bytes: what /metrics serves, byte for byte.
                sys.stdout.write(output.as_prometheus(collected.rendered))
            else:
                print(output.as_table(collected.clusters))
            result.append(EXIT_OK if collected.ok else EXIT_FAILED)

        svc = make_service(config, reactor, serve_http=False)
        return svc.collect_once().addCallback(show)

    try:
        task.react(once)
    except SystemExit as e:
        if e.code:
            return int(e.code)
    return result[0] if result else EXIT_FAILED


def run_forever(config: Config) -> int:
    """Serve until SIGINT or SIGTERM, then stop gracefully; SIGHUP reloads the config file."""
    from twisted.internet import defer, reactor
    from twisted.internet.interfaces import IReactorThreads
    from twisted.logger import Logger

    from .reload_triggers import reload_on_sighup
    from .service import ListenFailed, make_service

    log = Logger(namespace="klag_collector")
    svc = make_service(config, reactor)
    interpreter.tune()
    try:
        # Listen before the reactor runs, as twistd does: a taken port is then one line and
        # exit 1, before any poller has contacted Kafka.
        svc.privilegedStartService()
    except ListenFailed as e:
        log.critical("{error}", error=e)
        return EXIT_FAILED
    failed: List[str] = []
    restore_sighup: List[Callable[[], None]] = []

    def start() -> None:
        try:
            svc.startService()
        except Exception as e:
            failed.append(str(e))
            log.critical("cannot start: {error}", error=e)
            reactor.stop()
            return
        threads = cast(IReactorThreads, reactor)
        restore_sighup.append(reload_on_sighup(threads.callFromThread, svc.reload_config_file))

    def stop() -> Optional[defer.Deferred[None]]:
        for restore in restore_sighup:
            restore()
        if svc.running:
            log.info("stopping")
            return svc.stopService()
        return None

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return EXIT_FAILED if failed else EXIT_OK
