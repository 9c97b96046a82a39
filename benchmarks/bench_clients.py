#!/usr/bin/env python3
"""cycle_bench's helper processes: /metrics clients and a Kafka probe.

Each runs as `python bench_clients.py MODE ...` in a process of its own, so that the
bench's GIL does not slow the exporter it measures, nor the exporter's GIL the client:

    scrape PORT N                 N requests identity, then N gzip, one keep-alive connection each
    scrape-loop PORT INTERVAL     a gzip request every INTERVAL s until told to stop
    probe BOOTSTRAP TOPIC INTERVAL  a ListOffsets of TOPIC partition 0 every INTERVAL s until stopped

The looping modes print "ready" once warmed up, and stop when a line arrives on stdin.
Every mode prints its samples as one JSON line at the end; times are time.monotonic(),
which the bench process shares. 127.0.0.1 only, unless BOOTSTRAP names another broker.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import select
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

HERE = pathlib.Path(__file__).resolve()


def _get(conn: http.client.HTTPConnection, encoding: str) -> http.client.HTTPResponse:
    conn.request("GET", "/metrics", headers={"Accept-Encoding": encoding})
    response = conn.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    return response


def scrape(port: int, n: int) -> Dict[str, Any]:
    """K requests per encoding, back to back, after 5 warm-up requests."""
    out = {}
    for encoding in ("identity", "gzip"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        sockets = set()
        for _ in range(5):  # warm-up: connection, first touch of the cached bytes
            _get(conn, encoding)
        latencies, response = [], None
        for _ in range(n):
            t0 = time.monotonic()
            response = _get(conn, encoding)
            latencies.append(time.monotonic() - t0)
            sockets.add(id(conn.sock))
        conn.close()
        assert response is not None
        out[encoding] = {"latencies_s": latencies, "bytes": len(response.body),  # type: ignore[attr-defined]
                         "status": response.status,
                         "content_encoding": response.getheader("Content-Encoding"),
                         "connections": len(sockets)}
    return out


def _stop_requested(wait: float) -> bool:
    """Wait up to `wait` s for a line on stdin (the bench asking to stop)."""
    ready, _, _ = select.select([sys.stdin], [], [], max(0.0, wait))
    return bool(ready)


def _loop(interval: float, sample: Callable[[], Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Call `sample` every `interval` s (on a fixed schedule) until asked to stop."""
    samples = []
    next_at = time.monotonic()
    while True:
        t0 = time.monotonic()
        try:
            entry = sample()
        except Exception as e:  # a failed request is a sample too
            entry = {"error": f"{type(e).__name__}: {e}"}
        entry.update(t=t0, s=time.monotonic() - t0)
        samples.append(entry)
        next_at = max(next_at + interval, time.monotonic())
        if _stop_requested(next_at - time.monotonic()):
            return samples


def scrape_loop(port: int, interval: float) -> List[Dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(3):
        _get(conn, "gzip")
    print("ready", flush=True)

    def one() -> Dict[str, Any]:
        response = _get(conn, "gzip")
        return {"status": response.status, "bytes": len(response.body)}  # type: ignore[attr-defined]

    return _loop(interval, one)


def probe(bootstrap: str, topic: str, interval: float) -> List[Dict[str, Any]]:
    import logging

    logging.basicConfig(level=logging.ERROR)
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="klag-bench-probe",
                             request_timeout_ms=30_000)
    tp = TopicPartition(topic, 0)
    for _ in range(3):  # connection, metadata, the leader's connection
        consumer.end_offsets([tp], timeout_ms=30_000)
    print("ready", flush=True)
    try:
        return _loop(interval, lambda: {"end": consumer.end_offsets([tp], timeout_ms=10_000)[tp]})
    finally:
        consumer.close()


# -- the bench's side -----------------------------------------------------------------------


class Helper:
    """One helper process: started, awaited until ready, stopped with a line on stdin."""

    def __init__(self, *argv: str) -> None:
        self.mode = argv[0]
        self.ready_at: Optional[float] = None
        self.proc = subprocess.Popen([sys.executable, str(HERE), *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_ready(self) -> float:
        """Blocks until the helper is warmed up; returns that moment."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            raise RuntimeError(f"{self.mode} helper failed to start: {err[-2000:]}")
        self.ready_at = time.monotonic()
        return self.ready_at

    def stop(self, timeout: float = 60) -> Any:
        """Blocks until the helper has stopped; returns what it printed."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        return self.result(timeout)

    def result(self, timeout: float) -> Any:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise RuntimeError(f"{self.mode} helper did not finish in {timeout:.0f}s")
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.mode} helper failed (exit {self.proc.returncode}): "
                               f"{err[-2000:]}")
        return json.loads(out.strip().splitlines()[-1])


def run_scrape(port: int, n: int) -> Dict[str, Any]:
    """The `scrape` helper, to its end (blocking)."""
    return Helper("scrape", str(port), str(n)).result(timeout=1800)


def main(argv: List[str]) -> int:
    mode, rest = argv[0], argv[1:]
    if mode == "scrape":
        result: Any = scrape(int(rest[0]), int(rest[1]))
    elif mode == "scrape-loop":
        result = scrape_loop(int(rest[0]), float(rest[1]))
    elif mode == "probe":
        result = probe(rest[0], rest[1], float(rest[2]))
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
