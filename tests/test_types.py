"""The package passes mypy in strict mode (the [mypy] section of setup.cfg)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.subprocess
def test_the_package_passes_mypy_strict() -> None:
    """`python -m mypy` over klag_collector/ finds no error; its output is the failure message."""
    checked = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True,
                             text=True, timeout=600)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("Success: no issues found in ")
