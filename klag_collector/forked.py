"""Pure work done in a forked child process, for a worker thread that would hold the GIL long.

Writing the lines of tens of thousands of series is Python work: in a thread it holds the GIL
that the reactor needs back after every socket call of a scrape, and a scrape then waits a
switch interval each time (a 65k-series scrape went from 0.5 ms to 3-25 ms while lines were
written). A forked child sees the parent's memory as it was at the fork, so no row is copied
or sent to it; it works under a GIL of its own and sends back only its result, pickled, while
the thread that forked it waits in a read, which holds no GIL.

Only for work that takes plain data and returns plain data: the child runs nothing but
`work` (no reactor, no lock another thread may hold) and ends with os._exit.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import signal
import sys
import threading
import time
from typing import Callable, List, NoReturn, TypeVar

T = TypeVar("T")

# Where fork() keeps a threaded process usable: Linux. (macOS's system libraries are not
# safe to use in a child forked from a threaded process.)
CAN_FORK = sys.platform.startswith("linux")
# A child that has not answered by then is killed (a render of 60k series takes ~0.5 s).
DEADLINE = 60.0
_READ_SIZE = 1 << 20


class ChildFailed(Exception):
    """The child raised, died or did not answer in time; the message says which."""


class _ChildCPU:
    """User + system CPU seconds of the children reaped so far: they are not the process's own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds = 0.0

    def add(self, seconds: float) -> None:
        with self._lock:
            self._seconds += seconds

    def seconds(self) -> float:
        with self._lock:
            return self._seconds


CHILD_CPU = _ChildCPU()


def call_in_child(work: Callable[[], T], deadline: float = DEADLINE) -> T:
    """`work()`, run in a forked child; blocking (a worker thread calls it).

    Raises OSError when no child can be forked and ChildFailed when the child raised, died or
    did not answer within `deadline` seconds; the caller may then do the work itself.
    """
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:
        os.close(read_end)
        _be_the_child(work, write_end)
    os.close(write_end)
    try:
        answer = _read_answer(read_end, pid, deadline)
    finally:
        os.close(read_end)
        exit_code = _reap(pid)
    if exit_code != 0 or not answer:
        raise ChildFailed(f"the child exited with {_exit_text(exit_code)} before it answered")
    done, result = pickle.loads(answer)
    if not done:
        raise ChildFailed(f"the child raised {result}")
    return result  # type: ignore[no-any-return]


def _be_the_child(work: Callable[[], object], write_end: int) -> NoReturn:
    code = 1
    try:
        # A collection would touch, and so copy, every page of the parent's objects.
        gc.disable()
        # Stopped with the parent's process group, as a plain process is.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            outcome = (True, work())
        except Exception as e:  # sent to the parent, which decides
            outcome = (False, f"{type(e).__name__}: {e}")
        answer = memoryview(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
        while answer:
            answer = answer[os.write(write_end, answer):]
        code = 0
    finally:
        # No atexit handler, no flush of buffers the parent owns: they are the parent's.
        os._exit(code)


def _read_answer(read_end: int, pid: int, deadline: float) -> bytes:
    chunks: List[bytes] = []
    poller = select.poll()
    poller.register(read_end, select.POLLIN)
    ends_at = time.monotonic() + deadline
    while True:
        left = ends_at - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            os.kill(pid, signal.SIGKILL)
            raise ChildFailed(f"the child did not answer within {deadline:g} s and was killed")
        chunk = os.read(read_end, _READ_SIZE)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(pid: int) -> int:
    _, status, usage = os.wait4(pid, 0)
    CHILD_CPU.add(usage.ru_utime + usage.ru_stime)
    return os.waitstatus_to_exitcode(status)


def _exit_text(exit_code: int) -> str:
    if exit_code < 0:
        try:
            return f"signal {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"signal {-exit_code}"
    return f"status {exit_code}"
