"""Typed errors raised at the edges: config files and Kafka brokers."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration, located by file and key path.

    It carries the path and a reason, never the offending value, so that secrets read
    from the file cannot end up in a log line.
    """

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {reason}")


class KafkaError(Exception):
    """A failure talking to a cluster; the subclasses say which kind."""


class BrokerUnreachable(KafkaError):
    """No broker of the cluster answered."""


class BrokerTimeout(KafkaError):
    """A Kafka call did not finish within its time limit."""


class BrokerAuthError(KafkaError):
    """The cluster refused our credentials or certificate."""
