"""Log output: readable lines on a terminal, JSON lines otherwise or when asked."""

from __future__ import annotations

import errno
import json
import logging
import sys
import threading
from typing import IO, Any, Callable, Dict, Optional

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    formatEvent,
    globalLogBeginner,
)
from twisted.python.failure import Failure
from zope.interface import implementer

LEVELS = ("debug", "info", "warn", "error", "critical")
TEXT, JSON = "text", "json"

# Secret values (SASL and key passwords) to mask in every log line: kafka-python logs its whole
# configuration and the SASL PLAIN request bytes at debug level.
# Longest first, so a secret containing another is masked whole; replaced, never mutated, so
# that logging threads can read it without the lock.
_secrets: tuple[str, ...] = ()
_secrets_lock = threading.Lock()


def hide_secrets(*values: str) -> None:
    """Mask these values, and their Python str and bytes literal forms, wherever a log line has them."""
    global _secrets
    with _secrets_lock:
        found = set(_secrets)
        for value in values:
            if value:
                found.update((value, repr(value)[1:-1], repr(value.encode())[2:-1]))
        _secrets = tuple(sorted(found, key=len, reverse=True))


def redact(text: str) -> str:
    """`text` with every registered secret replaced by ***."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def printable(text: str) -> str:
    """`text` safe to show on a terminal: each character repr() would escape (controls such
    as ESC, line breaks, bidi overrides) as its Python escape, `\\x1b` for ESC."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def _line(event: Dict[str, Any]) -> Dict[str, Any]:
    record: Dict[str, Any] = {
        "time": round(event.get("log_time", 0.0), 3),
        "level": event["log_level"].name if "log_level" in event else "info",
        "logger": event.get("log_namespace", ""),
        "message": redact(formatEvent(event)),
    }
    failure: Optional[Failure] = event.get("log_failure")
    if failure is not None:
        record["error"] = redact(failure.getErrorMessage())
        record["traceback"] = redact(failure.getTraceback())
    return record


@implementer(ILogObserver)
class LineObserver:
    """Writes each event as one line, as text or as a JSON object."""

    def __init__(self, out: IO[str], fmt: str) -> None:
        self.out = out
        self.fmt = fmt

    def __call__(self, event: Dict[str, Any]) -> None:
        record = _line(event)
        if self.fmt == JSON:
            text = json.dumps(record, default=str)
        else:
            # Messages quote names from Kafka (groups, errors): no raw control byte reaches a
            # terminal. JSON lines are escaped by json.dumps.
            text = f"{record['level'].upper():5} {record['logger']}: {printable(record['message'])}"
            if "traceback" in record:
                text += "\n" + record["traceback"]
        self.out.write(text + "\n")
        self.out.flush()


class _ToTwisted(logging.Handler):
    """Routes kafka-python's stdlib logging into the same observers."""

    levels = {
        logging.DEBUG: LogLevel.debug,
        logging.INFO: LogLevel.info,
        logging.WARNING: LogLevel.warn,
        logging.ERROR: LogLevel.error,
        logging.CRITICAL: LogLevel.critical,
    }

    def emit(self, record: logging.LogRecord) -> None:
        level = self.levels.get(record.levelno, LogLevel.info)
        Logger(namespace=record.name).emit(level, "{msg}", msg=redact(record.getMessage()))


def default_format(stream: IO[str]) -> str:
    """Text for a person at a terminal, JSON for log collectors."""
    return TEXT if stream.isatty() else JSON


def start_logging(level: str = "info", fmt: Optional[str] = None, out: IO[str] = sys.stderr) -> None:
    """Send Twisted's logs to `out` at `level` and above, kafka-python's only at debug."""
    fmt = fmt or default_format(out)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    observer = FilteringLogObserver(LineObserver(out, fmt), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    quiet_kafka_python(level)


def quiet_kafka_python(level: str) -> None:
    """kafka-python's log lines only at debug `level`, and no traceback of an IO thread that
    died on a selector its client closed; for `klag-collector` and for `twistd klag`."""
    route_kafka_logs(level)
    if not getattr(threading.excepthook, "_klag_quiet", False):
        threading.excepthook = _without_closed_io_loops(threading.excepthook)


# What kafka-python 3.0.12's IO thread raises when another thread of its client polls the
# selector meanwhile: a client closed while its constructor still bootstraps.
_LOST_POLL = "Concurrent access to net.poll!"


def _closed_io_loop(args: "threading.ExceptHookArgs") -> bool:
    """Whether a thread ended as a kafka-python IO thread whose selector was closed under it.

    kafka-python closes a client's selector once its stop has waited a while, and the IO
    thread then dies in select(), or loses the selector to the thread closing it; it has
    logged that ("IO loop crashed", shown at debug) and failed what waited on it, and the
    client is gone either way, so its traceback is not for stderr.
    """
    thread, error = args.thread, args.exc_value
    if thread is None or not thread.name.startswith("kafka-io-"):
        return False
    if isinstance(error, RuntimeError):
        return str(error) == _LOST_POLL
    return (isinstance(error, (ValueError, OSError))
            and ("closed" in str(error) or getattr(error, "errno", None) == errno.EBADF))


def _without_closed_io_loops(
    hook: Callable[["threading.ExceptHookArgs"], Any]
) -> Callable[["threading.ExceptHookArgs"], Any]:
    def quiet(args: "threading.ExceptHookArgs") -> Any:
        return None if _closed_io_loop(args) else hook(args)
    quiet._klag_quiet = True  # type: ignore[attr-defined]  # installed once per process
    return quiet


def route_kafka_logs(level: str) -> None:
    """kafka-python's records go to Twisted's observers at debug `level`, else nowhere.

    It logs every reconnect attempt (a couple of ERROR lines a second while a broker is
    down); our own line per change of a cluster's state says what matters. Records from
    ERROR up are still made, below the handler: kafka_clients reads the connection errors
    (TLS, authentication) from them to explain a failure.
    """
    shown = logging.DEBUG if level == "debug" else logging.CRITICAL + 1
    handler = _ToTwisted()
    handler.setLevel(shown)
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.handlers[:] = [handler]
    kafka_logger.setLevel(min(logging.ERROR, shown))
    kafka_logger.propagate = False
