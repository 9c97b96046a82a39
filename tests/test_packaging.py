"""Installation as users do it: build the wheel, install it in a fresh venv, run the console script.

This is what `pipx install klag-collector` does. The venv sees the system site-packages so
the dependencies already installed are reused (pip would fetch any missing one from PyPI);
klag-collector itself comes only from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest

import klag_collector

REPO = Path(__file__).resolve().parent.parent
# Not part of a build: VCS data, caches, local Kafka downloads, build output.
IGNORE = shutil.ignore_patterns(".git", ".kafka", "build", "dist", "*.egg-info", "__pycache__",
                                ".pytest_cache", ".hypothesis", ".mypy_cache", ".venv", "venv",
                                "dropin.cache", "tests", "node_modules")


def clean_env() -> Dict[str, str]:
    """The environment without anything that would let the venv import the source tree."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(args: List[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the working tree (so the repo gets no build/ folder)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=IGNORE)
    out = root / "dist"
    build = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--wheel-dir", out, src], cwd=root)
    assert build.returncode == 0, build.stdout + build.stderr
    [whl] = out.glob("klag_collector-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns its bin directory."""
    root = tmp_path_factory.mktemp("venv")
    made = run([sys.executable, "-m", "venv", "--system-site-packages", root / "venv"], cwd=root)
    assert made.returncode == 0, made.stderr
    bindir = root / "venv" / "bin"
    pip = [bindir / "python", "-m", "pip", "install", "--quiet"]
    # First as users do (dependencies resolved, from PyPI when missing); then once more
    # without them, forced: a klag-collector in the system site-packages would otherwise
    # count as installed and the venv would get no copy and no console script.
    for extra in ([], ["--no-deps", "--force-reinstall"]):
        install = run(pip + extra + [wheel], cwd=root, timeout=300)
        assert install.returncode == 0, install.stdout + install.stderr
    return bindir


def test_wheel_ships_the_package_and_the_twistd_plugin(wheel):
    """The wheel holds klag_collector, twisted/plugins/klag_plugin.py and no twisted __init__.py."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/klag_plugin.py" in names
    assert "klag_collector/__init__.py" in names and "klag_collector/cli.py" in names
    # An __init__.py there would replace Twisted's own package when installed.
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert wheel.name.startswith(f"klag_collector-{klag_collector.__version__}-")


def test_installed_console_script_prints_the_version(venv, tmp_path):
    """`klag-collector --version` from the venv prints the package version."""
    result = run([venv / "klag-collector", "--version"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"klag-collector {klag_collector.__version__}"


def test_installed_console_script_checks_a_config(venv, tmp_path):
    """`klag-collector -c FILE --check` from the venv validates a config (0) and rejects a bad one (2)."""
    good = tmp_path / "config.toml"
    good.write_text('[exporter]\nhttp_port = 8123\n\n[[clusters]]\nname = "pkg"\n'
                    'bootstrap_servers = "127.0.0.1:9"\n')
    result = run([venv / "klag-collector", "-c", good, "--check"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"config {good} is valid" in result.stdout
    assert "cluster pkg: 127.0.0.1:9 (PLAINTEXT)" in result.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text('[exporter]\nhttp_port = 70000\n\n[[clusters]]\nname = "pkg"\n'
                   'bootstrap_servers = "127.0.0.1:9"\n')
    result = run([venv / "klag-collector", "-c", bad, "--check"], cwd=tmp_path)
    assert result.returncode == 2
    assert "http_port" in result.stderr


def test_installed_package_comes_from_the_venv_and_twistd_finds_the_plugin(venv, tmp_path):
    """In the venv, klag_collector is the installed copy and Twisted lists the `klag` plugin."""
    code = ("import klag_collector, twisted.plugin as p;"
            "from twisted.application.service import IServiceMaker;"
            "print(klag_collector.__file__);"
            "print(sorted(m.tapname for m in p.getPlugins(IServiceMaker)))")
    result = run([venv / "python", "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    location, plugins = result.stdout.splitlines()
    assert Path(location).resolve().is_relative_to(venv.parent.resolve())
    assert "'klag'" in plugins
