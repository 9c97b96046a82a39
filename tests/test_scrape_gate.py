"""Workers step aside while a request is answered (klag_collector.scrape_gate), and the HTTP
channel tells the gate when (http_channel.GuardedChannel)."""

from __future__ import annotations

import threading
import time
import unittest
from typing import List

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from klag_collector import metrics
from klag_collector.families import Family, sample_values
from klag_collector.http_channel import HttpLimits
from klag_collector.render import CHUNK_ROWS, family_lines, line_chunks
from klag_collector.scrape_gate import ScrapeGate, paced
from klag_collector import gzip_pieces


def pause_in_thread(gate: ScrapeGate) -> threading.Thread:
    worker = threading.Thread(target=gate.pause, daemon=True)
    worker.start()
    return worker


class GateTests(unittest.TestCase):
    def test_an_open_gate_lets_a_worker_through_at_once(self) -> None:
        gate = ScrapeGate(longest_pause=30.0)
        started = time.monotonic()
        gate.pause()
        self.assertLess(time.monotonic() - started, 1.0)

    def assert_held_until_answered(self, gate: ScrapeGate) -> None:
        """A worker pausing now waits until the one answer still being made is sent."""
        worker = pause_in_thread(gate)
        worker.join(0.2)
        self.assertTrue(worker.is_alive())
        gate.answered()
        worker.join(5.0)
        self.assertFalse(worker.is_alive())
        self.assertEqual(gate.answering_now, 0)

    def test_a_worker_waits_until_the_answer_is_sent(self) -> None:
        gate = ScrapeGate(longest_pause=30.0)
        gate.answering()
        self.assert_held_until_answered(gate)

    def test_the_gate_opens_only_when_every_answer_is_sent(self) -> None:
        gate = ScrapeGate(longest_pause=30.0)
        gate.answering()
        gate.answering()
        gate.answered()
        self.assertEqual(gate.answering_now, 1)
        self.assert_held_until_answered(gate)

    def test_a_pause_is_bounded(self) -> None:
        """An answer that is never sent holds a worker back at most longest_pause a pause."""
        gate = ScrapeGate(longest_pause=0.1)
        gate.answering()
        started = time.monotonic()
        gate.pause()
        waited = time.monotonic() - started
        self.assertGreaterEqual(waited, 0.09)
        self.assertLess(waited, 2.0)

    def test_paced_pauses_before_each_piece_is_made(self) -> None:
        events: List[str] = []

        def pieces():  # type: ignore[no-untyped-def]
            for name in ("a", "b"):
                events.append("make " + name)
                yield name

        got = list(paced(pieces(), lambda: events.append("pause")))
        self.assertEqual(got, ["a", "b"])
        self.assertEqual(events, ["pause", "make a", "pause", "make b", "pause"])


def lag_family(rows: int) -> Family:
    definition = metrics.MetricDef("demo_lag", "Lag.", ("group", "partition"), "gauge")
    labels = [("g", str(p)) for p in range(rows)]
    return Family(definition, (("cluster", "c"),), labels, sample_values(map(float, range(rows))))


class RenderPauseTests(unittest.TestCase):
    def test_lines_pause_before_every_chunk_and_are_the_same(self) -> None:
        family = lag_family(2 * CHUNK_ROWS + 5)
        pauses: List[None] = []
        piece = family_lines(family, lambda: pauses.append(None))
        self.assertEqual(len(pauses), 3 + 1)
        self.assertEqual(b"".join(gzip_pieces.inflate([piece])), b"".join(line_chunks(family)))


class ChannelTests(unittest.TestCase):
    def connect(self):  # type: ignore[no-untyped-def]
        from klag_collector.service import QuietSite
        from klag_collector.web import HealthResource

        self.clock = task.Clock()
        self.gate = ScrapeGate()
        site = QuietSite(HealthResource(), HttpLimits(8, 5.0), self.gate, reactor=self.clock)
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        wire = StringTransport()
        channel.makeConnection(wire)
        return channel, wire

    def test_a_request_holds_the_gate_until_its_answer_is_written(self) -> None:
        """From its first bytes until the reactor's turn after the next, once it wrote the
        answer."""
        channel, wire = self.connect()
        self.assertEqual(self.gate.answering_now, 0)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"OK\n", wire.value())
        self.assertEqual(self.gate.answering_now, 1)
        # task.Clock runs the reactor's next turns, which write the answer, in one advance.
        self.clock.advance(0)
        self.assertEqual(self.gate.answering_now, 0)

    def test_bytes_in_one_turn_hold_the_gate_once(self) -> None:
        channel, _ = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\n")
        channel.dataReceived(b"Host: x\r\n\r\n")
        self.assertEqual(self.gate.answering_now, 1)
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual(self.gate.answering_now, 0)

    def test_a_trickling_client_holds_the_gate_only_for_the_turns_its_bytes_arrive(self) -> None:
        """A slowloris never keeps workers waiting between its bytes."""
        channel, _ = self.connect()
        for byte in b"GET / HT":
            channel.dataReceived(bytes([byte]))
            self.clock.advance(0)
            self.clock.advance(0)
            self.assertEqual(self.gate.answering_now, 0)

    def test_a_lost_connection_still_lets_go(self) -> None:
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        channel, _ = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        channel.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual(self.gate.answering_now, 0)


class WiringTests(unittest.TestCase):
    def test_the_service_renders_behind_the_gate_of_its_own_site(self) -> None:
        from twisted.application.internet import StreamServerEndpointService
        from twisted.internet import endpoints

        from klag_collector.config import parse_config
        from klag_collector.service import make_service

        clock = task.Clock()
        config = parse_config('[[clusters]]\nname = "c"\nbootstrap_servers = "127.0.0.1:1"\n',
                              "gate.toml", "toml")
        endpoint = endpoints.TCP4ServerEndpoint(clock, 0, interface="127.0.0.1")
        svc = make_service(config, clock, endpoint=endpoint)
        sites = [child.factory for child in svc if isinstance(child, StreamServerEndpointService)]
        self.assertEqual(len(sites), 1)
        pause = svc._renderer._reports._pause  # type: ignore[attr-defined]
        self.assertIs(pause.__self__, sites[0].gate)
