"""The interpreter settings the exporter's own process makes (klag_collector.interpreter)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from klag_collector import interpreter
from exporter import env_with_repo

# Run in a process of its own: the settings are the whole interpreter's.
_PROBE = """
import gc, json, sys, time
from klag_collector import interpreter
interpreter.FULL_COLLECTION_EVERY = 0.05
before = [sys.getswitchinterval(), list(gc.get_threshold()), gc.get_freeze_count()]
full_before = gc.get_stats()[2]["collections"]
tuned = interpreter.tune()
after = [sys.getswitchinterval(), list(gc.get_threshold()), gc.get_freeze_count()]
time.sleep(0.5)
full_collections = gc.get_stats()[2]["collections"] - full_before
import os, threading
child = os.fork()
if child == 0:  # as twistd becomes a daemon: the collecting thread runs in the child too
    os._exit(0 if "klag-gc" in [t.name for t in threading.enumerate()] else 1)
child_status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
print(json.dumps([before, after, tuned.malloc_arenas, tuned.full_collection_every,
                  full_collections, child_status]))
"""


@pytest.mark.subprocess
def test_tune_sets_the_switch_interval_the_collector_and_malloc() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env_with_repo(), capture_output=True,
                         text=True, check=True, timeout=60).stdout
    before, after, arenas, every, full_collections, child_status = json.loads(out)
    (interval, threshold, frozen), (tuned_interval, tuned_threshold, tuned_frozen) = before, after
    assert interval == 0.005 and tuned_interval == pytest.approx(interpreter.SWITCH_INTERVAL)
    assert threshold == [700, 10, 10]
    assert tuned_threshold == [interpreter.YOUNG_THRESHOLD, interpreter.NEVER, interpreter.NEVER]
    # The old generation is collected by the thread, every 0.05 s here: 0.5 s makes ~10.
    assert every == 0.05 and 5 <= full_collections <= 11
    assert child_status == 0  # a forked child collects too
    # The modules imported so far moved to the permanent generation.
    assert frozen == 0 and tuned_frozen > 1000
    if platform.libc_ver()[0] == "glibc":
        assert arenas == interpreter.MALLOC_ARENAS
