"""Worker threads step aside while the reactor answers a request.

In one CPython process a scrape needs the GIL back after every socket call, and while a
render holds it the reactor waits up to a switch interval each time. The HTTP channel tells
the gate when it starts answering and when the answer is in the kernel; a worker calls
`pause()` between two pieces of its work and waits there meanwhile, so the scrape runs alone.

A pause is bounded (LONGEST_PAUSE): a client that floods requests slows the work, never stops
it. A request holds the gate for a couple of reactor turns, whatever its client does: one that
reads its answer slowly, or trickles its request, holds it no longer.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
# What a worker calls between two pieces of its work.
Pause = Callable[[], None]

# The most a worker waits at one pause. A gzipped /metrics of 65k series takes ~0.5 ms to
# answer; a flood of requests keeps the gate shut, and then a render of 60k rows (~700
# chunks) takes at most ~1.4 s longer.
LONGEST_PAUSE = 0.002


class ScrapeGate:
    """Open unless the reactor is answering; `answering()` and `answered()` come in pairs
    from the reactor thread, `pause()` from any other."""

    def __init__(self, longest_pause: float = LONGEST_PAUSE) -> None:
        self._longest_pause = longest_pause
        self._answering = 0
        self._open = threading.Event()
        self._open.set()

    @property
    def answering_now(self) -> int:
        """Answers being made or handed over now."""
        return self._answering

    def answering(self) -> None:
        """The reactor starts answering a request: its bytes arrived."""
        self._answering += 1
        self._open.clear()

    def answered(self) -> None:
        """The reactor has written the answer `answering()` announced (as much of it as the
        kernel took)."""
        self._answering -= 1
        if not self._answering:
            self._open.set()

    def pause(self) -> None:
        """Wait while the reactor answers, at most LONGEST_PAUSE; at once when it does not."""
        if not self._open.is_set():
            self._open.wait(self._longest_pause)


def never_pause() -> None:
    """The pause of work that no site waits for (a one-shot run, a test)."""


def paced(pieces: Iterable[T], pause: Pause) -> Iterator[T]:
    """*pieces*, with *pause* called before each is made."""
    items = iter(pieces)
    while True:
        pause()
        try:
            yield next(items)
        except StopIteration:
            return
