"""The compose stack's producer and consumer: the seed's phase schedules, run by devtools.traffic.

The seed stack had two bash loops (scripts/producer.sh, scripts/consumer.sh) around the
console clients. devtools.traffic.Traffic plays both schedules, a producer thread and a
consumer thread, against test-topic (6 partitions) and high-volume-topic (3 partitions) with
the groups test-consumer-group and high-volume-consumer. This script runs it until SIGTERM.

    python /opt/klag/traffic.py [--bootstrap kafka:29092] [--speed 1]

Environment: KLAG_TRAFFIC_BOOTSTRAP, KLAG_TRAFFIC_SPEED (the flags win).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from devtools.traffic import Traffic


def main() -> None:
    """Start the traffic, wait for SIGTERM or SIGINT, stop it (committing what was read)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default=os.environ.get("KLAG_TRAFFIC_BOOTSTRAP", "kafka:29092"))
    p.add_argument("--speed", type=float, default=float(os.environ.get("KLAG_TRAFFIC_SPEED", "1")))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # The broker is the compose service "kafka", not loopback: say so explicitly.
    traffic = Traffic(args.bootstrap, args.speed, allow_remote=True).start()
    try:
        stop.wait()
    finally:
        traffic.stop()


if __name__ == "__main__":
    main()
