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
    # kafka-python 3.0.12, a client closed while it bootstraps: the IO thread loses the poll.
    assert _die("kafka-io-kafka-python-3.0.12", RuntimeError("Concurrent access to net.poll!")) == []


def test_any_other_thread_death_is_told() -> None:
    assert _die("kafka-io-x", ValueError("something else")) == ["kafka-io-x"]
    assert _die("klag-prod_0", ValueError("I/O operation on closed epoll object")) == [
        "klag-prod_0"]
    assert _die("kafka-io-x", RuntimeError("closed")) == ["kafka-io-x"]
    assert _die("kafka-io-x", RuntimeError("Recursive access to net.poll!")) == ["kafka-io-x"]
    assert _die("klag-prod_0", RuntimeError("Concurrent access to net.poll!")) == ["klag-prod_0"]


def test_twistd_keeps_kafka_python_out_of_its_log(tmp_path: Any) -> None:
    """The twistd plugin's makeService routes kafka-python's records away (only -l debug
    shows them) and installs the thread hook once, however often it runs."""
    import logging

    from klag_collector import tap

    config = tmp_path / "klag.toml"
    config.write_text('[[clusters]]\nname = "c"\nbootstrap_servers = "127.0.0.1:9"\n')
    saved_hook, kafka = threading.excepthook, logging.getLogger("kafka")
    saved = (list(kafka.handlers), kafka.level, kafka.propagate)
    kafka.handlers[:], kafka.propagate = [], True
    try:
        hooks = []
        for _ in range(2):
            options = tap.Options()
            options.parseOptions(["-c", str(config)])
            tap.makeService(options)
            hooks.append(threading.excepthook)
        assert getattr(hooks[0], "_klag_quiet", False) and hooks[0] is hooks[1]
        assert [h.level for h in kafka.handlers] == [logging.CRITICAL + 1]
        assert kafka.propagate is False
    finally:
        threading.excepthook = saved_hook
        kafka.handlers[:], kafka.level, kafka.propagate = saved
