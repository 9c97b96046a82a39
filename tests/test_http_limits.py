"""The exporter's HTTP server against strangers: bodies refused unread, headers due on time,
connections capped with slowloris ones evicted first, the open-file limit raised.

The unit tests drive http_channel's site and channel on a task.Clock over StringTransports;
the `subprocess` ones run klag-collector and attack it over TCP on 127.0.0.1.
"""

from __future__ import annotations

import itertools
import os
import re
import resource
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Set, Tuple

import pytest
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from exporter import ExporterProcess, free_port
from klag_collector.config import ExporterConfig, parse_config
from klag_collector.errors import ConfigError
from klag_collector.http_channel import (
    BODY_REFUSED,
    GuardedChannel,
    GuardedSite,
    HttpLimits,
    eviction_victim,
    raise_open_file_limit,
)
from klag_collector.web import HealthResource

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
HEALTH_ANSWER = re.compile(rb"HTTP/1\.1 200 OK\r\n.*\r\n\r\nOK\n\Z", re.S)


class Hold(Resource):
    """A resource that never finishes answering: its connection stays busy."""

    isLeaf = True

    def render_GET(self, request: Request) -> int:
        return NOT_DONE_YET


@implementer(IPushProducer)
class Stalled:
    """A body producer whose client never reads."""

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class Send(Hold):
    """A resource sending a body that never ends (a client reading very slowly)."""

    def render_GET(self, request: Request) -> int:
        request.registerProducer(Stalled(), True)
        return NOT_DONE_YET


def root() -> Resource:
    tree = Resource()
    tree.putChild(b"health", HealthResource())
    tree.putChild(b"hold", Hold())
    tree.putChild(b"send", Send())
    return tree


class Conn(NamedTuple):
    channel: GuardedChannel
    wire: StringTransport


class SiteOnClock:
    """A GuardedSite on a Clock; `connect()` is a newcomer, as the port would make it."""

    def __init__(self, cap: int = 3, header_timeout: float = 5.0) -> None:
        self.clock = task.Clock()
        self.site = GuardedSite(root(), HttpLimits(cap, header_timeout), reactor=self.clock)

    def connect(self) -> Optional[Conn]:
        channel = self.site.buildProtocol(PEER)
        if channel is None:
            return None
        wire = StringTransport()
        channel.makeConnection(wire)
        return Conn(channel, wire)

    def lose(self, conn: Conn) -> None:
        """What the reactor does once a closed connection's socket is gone."""
        conn.channel.connectionLost(Failure(ConnectionDone()))


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where tempfile (and so twisted.web's body spooling) puts files during the test."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    return spool


def spooled(directory: Path, pid: str = "self") -> List[str]:
    """Files in `directory`, and files a process holds open there.

    twisted.web spools a body into a tempfile.TemporaryFile, which has no name from the
    start (unlinked, or O_TMPFILE): only the process's open files show it.
    """
    held = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith(str(directory) + "/"):
            held.append(target)
    return sorted(held + [str(p) for p in directory.iterdir()])


# -- bodies --------------------------------------------------------------------------------

# Requests that announce a body or ask for 100 Continue, with body bytes already behind them.
WITH_BODIES = {
    "300 MB claimed": b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n"
                      + b"x" * 200_000,
    "chunked": b"POST /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"30d40\r\n" + b"x" * 200_000,
    "expect 100-continue": b"PUT /ready HTTP/1.1\r\nExpect: 100-Continue\r\n"
                           b"Content-Length: 200000\r\n\r\n",
    "expect, no length": b"GET /health HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
    "a GET with a body": b"GET /health HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello",
    "unknown path": b"POST /nope HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
    "length, then a later header": b"POST / HTTP/1.1\r\nContent-Length: 9\r\nX-A: b\r\n\r\n",
}


@pytest.mark.parametrize("raw", WITH_BODIES.values(), ids=WITH_BODIES.keys())
def test_a_request_with_a_body_gets_413_and_is_closed(raw: bytes, spool_dir: Path) -> None:
    """413 at once, no 100 Continue, the connection closed, nothing spooled; and whatever the
    client sends after that is dropped unread."""
    conn = SiteOnClock().connect()
    assert conn is not None
    conn.channel.dataReceived(raw)
    assert conn.wire.value() == BODY_REFUSED
    assert BODY_REFUSED.startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert conn.wire.disconnecting
    conn.channel.dataReceived(b"y" * 300_000 + b"\r\n\r\n" + HEALTH)
    assert conn.wire.value() == BODY_REFUSED
    assert spooled(spool_dir) == []


def test_twisted_alone_would_spool_that_body(spool_dir: Path) -> None:
    """The control: twisted.web's own Site answers 100 Continue and spools a 300 MB claim
    into a temp file (unlinked at once, so it is seen as an open file of this process)."""
    site = Site(root(), reactor=task.Clock())
    channel = site.buildProtocol(PEER)
    wire = StringTransport()
    channel.makeConnection(wire)
    channel.dataReceived(b"POST /health HTTP/1.1\r\nExpect: 100-continue\r\n"
                         b"Content-Length: 300000000\r\n\r\n")
    assert wire.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert len(spooled(spool_dir)) == 1
    channel.connectionLost(Failure(ConnectionDone()))
    assert spooled(spool_dir) == []


def test_no_body_is_served_as_usual() -> None:
    """Content-Length: 0 is no body: the request is answered, the connection kept."""
    conn = SiteOnClock().connect()
    assert conn is not None
    conn.channel.dataReceived(b"GET /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert HEALTH_ANSWER.match(conn.wire.value()), conn.wire.value()
    assert not conn.wire.disconnecting


# -- the header timeout ----------------------------------------------------------------------


def test_headers_are_due_within_the_timeout_however_slowly_they_trickle() -> None:
    """A byte every second does not keep a connection: at 5 s without whole headers it closes."""
    on = SiteOnClock(header_timeout=5.0)
    conn = on.connect()
    assert conn is not None
    for byte in b"GET /health HTTP/1.1\r\nX-Slow: ":
        if on.clock.seconds() >= 4.5:
            break
        conn.channel.dataReceived(bytes([byte]))
        on.clock.advance(0.5)
    assert not conn.wire.disconnecting
    on.clock.advance(0.5)
    assert conn.wire.disconnecting
    assert conn.wire.value() == b""
    assert not conn.wire.disconnected
    on.clock.advance(conn.channel.abortTimeout)  # its socket never closed: cut it off
    assert conn.wire.disconnected


def test_the_timeout_runs_again_from_each_answer() -> None:
    """On a keep-alive connection each request has the timeout, counted from the last answer."""
    on = SiteOnClock(header_timeout=5.0)
    conn = on.connect()
    assert conn is not None
    for _ in range(3):
        on.clock.advance(4.0)
        conn.channel.dataReceived(HEALTH)
    assert conn.wire.value().count(b"HTTP/1.1 200 OK") == 3
    on.clock.advance(4.9)
    assert not conn.wire.disconnecting
    on.clock.advance(0.1)
    assert conn.wire.disconnecting


def test_a_busy_connection_is_not_timed_out() -> None:
    """While a request is being answered the header timeout does not run."""
    on = SiteOnClock(header_timeout=5.0)
    conn = on.connect()
    assert conn is not None
    conn.channel.dataReceived(b"GET /hold HTTP/1.1\r\n\r\n")
    on.clock.advance(600)
    assert not conn.wire.disconnecting


def test_closing_leaves_no_timer_behind() -> None:
    """A connection lost while waiting for headers cancels its deadline."""
    on = SiteOnClock()
    conn = on.connect()
    assert conn is not None
    on.lose(conn)
    assert [c for c in on.clock.getDelayedCalls() if c.func == conn.channel._headers_late] == []
    assert on.site.open_connections == 0


# -- the connection cap ----------------------------------------------------------------------


class Waiter(NamedTuple):
    name: str
    awaiting_request: bool
    answered: int
    streaming: bool = False


def test_the_victim_is_the_oldest_that_never_sent_a_request() -> None:
    """Never-served waiting ones go first, then idle keep-alive ones, then ones being sent a
    body; one whose answer is being made is never taken."""
    busy, sending, idle, fresh, fresh2 = (
        Waiter("busy", False, 3), Waiter("sending", False, 1, True), Waiter("idle", True, 2),
        Waiter("fresh", True, 0), Waiter("fresh2", True, 0))
    assert eviction_victim([busy, sending, idle, fresh, fresh2]) is fresh
    assert eviction_victim([busy, sending, idle, Waiter("idle2", True, 1)]) is idle
    assert eviction_victim([busy, sending, Waiter("sending2", False, 0, True)]) is sending
    assert eviction_victim([busy, Waiter("busy2", False, 0)]) is None
    assert eviction_victim([]) is None


def test_a_newcomer_at_the_cap_evicts_the_oldest_slowloris() -> None:
    """At 3 of 3, a newcomer is served and the oldest connection without a request is closed
    (aborted), even when an idle keep-alive connection is older."""
    on = SiteOnClock(cap=3)
    idle, slow1, slow2 = (on.connect() for _ in range(3))
    assert idle and slow1 and slow2
    idle.channel.dataReceived(HEALTH)
    slow1.channel.dataReceived(b"GET /hea")
    newcomer = on.connect()
    assert newcomer is not None
    evicted = (slow1.wire.disconnected, slow2.wire.disconnected, idle.wire.disconnected)
    assert evicted == (True, False, False)
    assert on.site.open_connections == 3
    newcomer.channel.dataReceived(HEALTH)
    assert HEALTH_ANSWER.match(newcomer.wire.value())
    on.lose(slow1)  # the late connectionLost of the evicted one changes nothing
    assert on.site.open_connections == 3
    slow1.channel.dataReceived(b"lth HTTP/1.1\r\n\r\n")
    assert slow1.wire.value() == b""


def test_idle_keep_alive_connections_go_when_no_slowloris_is_left() -> None:
    on = SiteOnClock(cap=2)
    first, second = on.connect(), on.connect()
    assert first and second
    first.channel.dataReceived(HEALTH)
    second.channel.dataReceived(HEALTH)
    assert on.connect() is not None
    assert (first.wire.disconnected, second.wire.disconnected) == (True, False)


def test_a_newcomer_is_refused_when_every_connection_is_busy() -> None:
    """With every connection answering a request none can be evicted: the newcomer is closed."""
    on = SiteOnClock(cap=2)
    conns = [on.connect(), on.connect()]
    for conn in conns:
        assert conn is not None
        conn.channel.dataReceived(b"GET /hold HTTP/1.1\r\n\r\n")
    assert on.connect() is None
    assert on.site.open_connections == 2
    on.lose(conns[0])  # one goes: there is room again
    assert on.connect() is not None
    assert on.site.open_connections == 2


def test_a_slow_reader_goes_when_no_connection_waits() -> None:
    """A connection still being sent a body is evicted before a newcomer is refused."""
    on = SiteOnClock(cap=2)
    busy, reader = on.connect(), on.connect()
    assert busy and reader
    busy.channel.dataReceived(b"GET /hold HTTP/1.1\r\n\r\n")
    reader.channel.dataReceived(b"GET /send HTTP/1.1\r\n\r\n")
    assert (busy.channel.streaming, reader.channel.streaming) == (False, True)
    newcomer = on.connect()
    assert newcomer is not None
    assert (busy.wire.disconnected, reader.wire.disconnected) == (False, True)
    newcomer.channel.dataReceived(b"GET /hold HTTP/1.1\r\n\r\n")
    assert on.connect() is None  # connections whose answers are being made stay


def test_the_count_follows_closed_connections() -> None:
    on = SiteOnClock(cap=5)
    conns = [on.connect() for _ in range(4)]
    assert on.site.open_connections == 4
    for conn in conns[:3]:
        assert conn is not None
        on.lose(conn)
    assert on.site.open_connections == 1


# -- config and the open-file limit ----------------------------------------------------------

CLUSTER = '[[clusters]]\nname = "c"\nbootstrap_servers = "k:9092"\n'


def test_the_limits_are_read_from_exporter() -> None:
    config = parse_config('[exporter]\nhttp_max_connections = 8\nhttp_header_timeout = "750ms"\n'
                          + CLUSTER, "t.toml", "toml")
    assert (config.exporter.http_max_connections, config.exporter.http_header_timeout) == (8, 0.75)
    default = ExporterConfig()
    assert (default.http_max_connections, default.http_header_timeout) == (64, 5.0)


@pytest.mark.parametrize("line, problem", [
    ("http_max_connections = 0", "t.toml: exporter.http_max_connections: must be at least 1"),
    ('http_max_connections = "64"', "exporter.http_max_connections: must be an integer"),
    ('http_header_timeout = "0s"', "exporter.http_header_timeout: must be longer than zero"),
    ("http_header_timeout = 5", "exporter.http_header_timeout: must be a duration string"),
])
def test_bad_limits_are_one_line_errors(line: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[exporter]\n{line}\n" + CLUSTER, "t.toml", "toml")
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.fixture
def restore_file_limit() -> Iterator[Tuple[int, int]]:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(
        restore_file_limit: Tuple[int, int]) -> None:
    _, hard = restore_file_limit
    if hard == resource.RLIM_INFINITY or hard < 600:
        pytest.skip(f"needs a finite hard RLIMIT_NOFILE of 600 or more, not {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    limit = raise_open_file_limit()
    assert (limit.before, limit.after) == (512, hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    assert raise_open_file_limit() == (hard, hard)  # already there: nothing to do


# -- against the real process ------------------------------------------------------------------

CAP = 64


def serving(tmp_path: Path, extra: str = "") -> ExporterProcess:
    """klag-collector on a free port, polling a cluster nobody answers for; /health answering."""
    port = free_port()
    exporter = ExporterProcess(tmp_path, f"""
[exporter]
http_host = "127.0.0.1"
http_port = {port}
http_max_connections = {CAP}
http_header_timeout = "5s"
{extra}
[exporter.performance]
kafka_timeout = "2s"
[[clusters]]
name = "dead"
bootstrap_servers = "127.0.0.1:{free_port()}"
""", port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert exporter.proc.poll() is None, exporter.log.read_text()
        try:
            if health(port)[0] == 200:
                return exporter
        except OSError:
            time.sleep(0.1)
    exporter.stop()
    pytest.fail(f"/health never answered:\n{exporter.log.read_text()}")


def health(port: int, timeout: float = 5.0) -> Tuple[int, float]:
    """Status of GET /health on a new connection, and the seconds from connecting to the end."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = read_all(s)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, time.perf_counter() - started


def read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]


@pytest.mark.subprocess
def test_the_process_refuses_a_300_mb_claim_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claimed 300 MB body (with or without Expect: 100-continue) gets 413 within a second
    while the body is never sent; the process spools nothing and its RSS stays put, even with
    20 MB of body pushed behind the headers."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool))
    exporter = serving(tmp_path)
    try:
        pid = exporter.proc.pid
        before = rss_kib(pid)
        for expect in (b"", b"Expect: 100-continue\r\n"):
            with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as s:
                started = time.perf_counter()
                s.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\n" + expect
                          + b"Content-Length: 300000000\r\n\r\n")
                answer = read_all(s)  # to the server's close
                elapsed = time.perf_counter() - started
            assert answer == BODY_REFUSED, answer
            assert elapsed < 1.0
        with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as s:
            s.sendall(b"PUT /ready HTTP/1.1\r\nContent-Length: 300000000\r\n\r\n")
            try:
                for _ in range(20):
                    s.sendall(b"x" * 1_000_000)
            except OSError:
                pass  # closed under the client's feet: the server read no more
        assert health(exporter.port)[0] == 200
        assert spooled(spool, str(pid)) == []
        assert rss_kib(pid) - before < 5 * 1024
    finally:
        exporter.stop()


def server_connections(pid: int, port: int) -> int:
    """TCP connections to `port` whose socket `pid` holds open (its listening one left out)."""
    inodes: Set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    local = f"0100007F:{port:04X}"
    # A set: the kernel writes the table in pieces while connections come and go, so an
    # entry can show up twice in one read.
    held = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] != "0A" and fields[9] in inodes:
            held.add(fields[9])
    return len(held)


class Slowloris:
    """N client sockets trickling a request's bytes, each one byte a second, never ending its
    headers. A socket the server closes is opened again, at most `reopen` per 0.1 s round:
    a steady press, not a flood of more newcomers at once than the server holds (that can
    cut off any newcomer, a Prometheus server's too, before its request is read)."""

    PREAMBLE = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.socks: List[Optional[socket.socket]] = [None] * size
        self.sent = [0] * size
        self.reset = 0  # sockets found closed by the server
        self.stop = threading.Event()

    def run(self, reopen: int = 25) -> None:
        try:
            for round_ in itertools.count():
                if self.stop.is_set():
                    return
                budget = reopen
                for i, s in enumerate(self.socks):
                    if s is not None and (i % 10 != round_ % 10 or self._trickle(i, s)):
                        continue
                    if s is not None:
                        s.close()
                        self.socks[i] = None
                        self.reset += 1
                    if budget > 0:
                        budget -= 1
                        self.socks[i], self.sent[i] = self._open(), 0
                self.stop.wait(0.1)
        finally:
            for s in self.socks:
                if s is not None:
                    s.close()

    def _open(self) -> socket.socket:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", self.port))
        return s

    def _trickle(self, i: int, s: socket.socket) -> bool:
        """Send its next byte; False when the server has closed the connection."""
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                return False
        except BlockingIOError:
            pass  # nothing from the server: still open
        except OSError:
            return False
        offset = self.sent[i]
        try:
            self.sent[i] += s.send(self.PREAMBLE[offset:offset + 1] or b"a")
        except BlockingIOError:
            pass  # still connecting
        except OSError:
            return False
        return True


@pytest.fixture
def room_for_sockets() -> Iterator[None]:
    """A soft open-file limit of 512 for the exporter to start with (it raises its own), and
    the hard limit for this test, which holds a thousand sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"needs a hard RLIMIT_NOFILE of 1200 or more, not {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def soft_file_limit(pid: int) -> Tuple[str, str]:
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return soft, hard


@pytest.mark.subprocess
def test_health_answers_while_1000_slowloris_connections_press(
        tmp_path: Path, room_for_sockets: None) -> None:
    """With 1,000 sockets trickling header bytes (and reopened when closed), /health on a new
    connection answers 200 with a median under 100 ms, and the process never holds more than
    the cap of connections; it raised its soft open-file limit to the hard one at start."""
    exporter = serving(tmp_path, extra="")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    attack = Slowloris(exporter.port, 1000)
    attacker = threading.Thread(target=attack.run, name="slowloris")
    held: List[int] = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            held.append(server_connections(exporter.proc.pid, exporter.port))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, name="count")
    try:
        soft, hard_of_child = soft_file_limit(exporter.proc.pid)
        assert soft == hard_of_child, (soft, hard_of_child)
        attacker.start()
        watcher.start()
        time.sleep(5.0)  # all 1,000 opened; most already evicted, some opened again
        probes = []
        for _ in range(20):
            probes.append(health(exporter.port))
            time.sleep(0.2)
    finally:
        attack.stop.set()
        watching.set()
        for thread in (attacker, watcher):
            if thread.ident is not None:
                thread.join(30)
        exporter.stop()
    latencies = sorted(seconds for _, seconds in probes)
    assert [status for status, _ in probes] == [200] * 20
    assert statistics.median(latencies) < 0.100, latencies
    assert latencies[-1] < 2.0, latencies
    assert attack.reset > 1000  # the attack did fill the cap, again and again
    # A newcomer's socket exists from its accept() until the site has evicted an older one
    # for it (or refused it), a few microseconds in which the process holds CAP + 1: the
    # sampling sees that now and then. The site's own count never passes CAP (unit tests).
    assert max(held) <= CAP + 1, max(held)
    assert max(held) >= CAP - 4, max(held)
