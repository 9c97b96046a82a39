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
import gc, json, sys
from klag_collector import interpreter
before = [sys.getswitchinterval(), list(gc.get_threshold()), gc.get_freeze_count()]
tuned = interpreter.tune()
print(json.dumps([before, [sys.getswitchinterval(), list(gc.get_threshold()), gc.get_freeze_count()],
                  tuned.malloc_arenas]))
"""


@pytest.mark.subprocess
def test_tune_shortens_the_switch_interval_and_freezes_what_is_alive() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env_with_repo(), capture_output=True,
                         text=True, check=True, timeout=60).stdout
    before, after, arenas = json.loads(out)
    (interval, threshold, frozen), (tuned_interval, tuned_threshold, tuned_frozen) = before, after
    assert interval == 0.005 and tuned_interval == interpreter.SWITCH_INTERVAL
    assert tuned_threshold == [interpreter.YOUNG_THRESHOLD, threshold[1], threshold[2]]
    # The modules imported so far moved to the permanent generation.
    assert frozen == 0 and tuned_frozen > 1000
    if platform.libc_ver()[0] == "glibc":
        assert arenas == interpreter.MALLOC_ARENAS
