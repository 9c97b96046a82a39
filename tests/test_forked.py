"""forked.call_in_child: the child's answer, or one ChildFailed saying what went wrong."""

from __future__ import annotations

import os
import signal
import time

import pytest

from klag_collector import forked
from klag_collector.gzip_pieces import Piece

pytestmark = pytest.mark.skipif(not forked.CAN_FORK, reason="forks only on Linux")


def test_the_childs_result_comes_back_and_the_child_is_reaped() -> None:
    parent = os.getpid()
    before = forked.CHILD_CPU.seconds()
    pid, pieces = forked.call_in_child(
        lambda: (os.getpid(), {"f": Piece(b"\x01" * 3_000_000, 7, 9)}))
    assert pid != parent
    assert pieces == {"f": Piece(b"\x01" * 3_000_000, 7, 9)}
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert forked.CHILD_CPU.seconds() > before


def test_the_child_sees_the_parents_memory_as_it_was() -> None:
    rows = [(str(i), float(i)) for i in range(50_000)]
    assert forked.call_in_child(lambda: sum(value for _, value in rows)) == sum(range(50_000))


def test_an_exception_in_the_child_is_one_childfailed_naming_it() -> None:
    def fails() -> None:
        raise KeyError("kafka_consumergroup_group_lag")

    with pytest.raises(forked.ChildFailed) as failed:
        forked.call_in_child(fails)
    assert str(failed.value) == "the child raised KeyError: 'kafka_consumergroup_group_lag'"


def test_a_child_killed_by_a_signal_is_named() -> None:
    with pytest.raises(forked.ChildFailed) as failed:
        forked.call_in_child(lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert str(failed.value) == "the child exited with signal SIGKILL before it answered"


def test_a_child_that_exits_without_answering_is_named() -> None:
    with pytest.raises(forked.ChildFailed) as failed:
        forked.call_in_child(lambda: os._exit(3))
    assert str(failed.value) == "the child exited with status 3 before it answered"


def test_a_child_that_hangs_is_killed_at_the_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(forked.ChildFailed) as failed:
        forked.call_in_child(lambda: time.sleep(30), deadline=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    assert str(failed.value) == "the child did not answer within 0.3 s and was killed"


def test_no_fork_is_the_oserror(monkeypatch: pytest.MonkeyPatch) -> None:
    opened = len(os.listdir("/proc/self/fd"))

    def refused() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refused)
    with pytest.raises(BlockingIOError):
        forked.call_in_child(lambda: 1)
    assert len(os.listdir("/proc/self/fd")) == opened  # the pipe is closed again
