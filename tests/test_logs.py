"""What reaches stderr from threads that die: only what is news."""

from __future__ import annotations

import errno
import threading
from typing import Any, List

from klag_collector import logs


def _die(name: str, error: BaseException) -> List[str]:
    """Run a thread named *name* that raises *error*, under the exporter's hook; return the
    names of the threads whose end reached the hook before it."""
    seen: List[str] = []

    def previous(args: Any) -> None:
        seen.append(args.thread.name)

    def fail() -> None:
        raise error

    saved = threading.excepthook
    threading.excepthook = logs._without_closed_io_loops(previous)
    try:
        thread = threading.Thread(target=fail, name=name)
        thread.start()
        thread.join()
    finally:
        threading.excepthook = saved
    return seen


def test_a_kafka_io_thread_ending_on_a_closed_selector_prints_nothing() -> None:
    assert _die("kafka-io-kafka-python-3.0.12",
                ValueError("I/O operation on closed epoll object")) == []
    assert _die("kafka-io-x", OSError(errno.EBADF, "Bad file descriptor")) == []


def test_any_other_thread_death_is_told() -> None:
    assert _die("kafka-io-x", ValueError("something else")) == ["kafka-io-x"]
    assert _die("klag-prod_0", ValueError("I/O operation on closed epoll object")) == [
        "klag-prod_0"]
    assert _die("kafka-io-x", RuntimeError("closed")) == ["kafka-io-x"]
