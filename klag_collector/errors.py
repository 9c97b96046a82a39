"""The config error we raise, and the one-line text any failure is reported with."""

from __future__ import annotations

from twisted.internet import defer


class ConfigError(ValueError):
    """A bad configuration, located by file and key path.

    It carries the path and a reason, never the offending value, so that secrets read
    from the file cannot end up in a log line. The one exception is a file location that
    cannot be opened: its reason names the file, and no such key holds a secret.
    """

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {reason}")


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
