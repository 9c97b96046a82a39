"""The config error we raise, and the one-line text any failure is reported with."""

from __future__ import annotations

from twisted.internet import defer

from klag_collector.logs import printable


class ConfigError(ValueError):
    """A bad configuration, located by file and key path.

    It carries the path and a reason, never the offending value, so that secrets read
    from the file cannot end up in a log line. The one exception is a file location that
    cannot be opened: its reason names the file, and no such key holds a secret.
    """

    def __init__(self, source: str, key: str, reason: str) -> None:
        # A key read from the file may hold a line break ("a\nb" = 1): escaped, it stays one line.
        self.source, self.key, self.reason = printable(source), printable(key), printable(reason)
        where = f"{self.source}: {self.key}" if self.key else self.source
        super().__init__(f"{where}: {self.reason}")


def describe_error(error: BaseException) -> str:
    """A one-line description of a failure, for logs and /ready."""
    if isinstance(error, defer.TimeoutError):
        return "timed out"
    text = str(error).strip().splitlines()
    detail = text[0] if text else ""
    name = type(error).__name__
    # kafka-python's errors already say their class name ("KafkaTimeoutError: ...",
    # "[Error 7] RequestTimedOutError: ..."): do not say it twice.
    if not detail or detail == name:
        return name
    if detail.startswith(f"{name}:") or f"] {name}" in detail:
        return detail
    return f"{name}: {detail}"
