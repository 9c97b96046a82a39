"""Packaging as released and installed: `python -m build`, `twine check`, `pipx install WHEEL`.

The sdist and the wheel are built with build isolation from a copy of the committed-looking
tree (no caches, venvs or build output), exactly as the release procedure in the README does;
the wheel must carry the exporter and nothing else. pipx then installs the wheel into its own
venv, with the dependencies resolved as a user's pipx would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, List, NamedTuple, Set

import pytest

pytestmark = pytest.mark.packaging

import klag_collector

REPO = Path(__file__).resolve().parent.parent
VERSION = klag_collector.__version__
# Not part of a release: VCS data, caches, local Kafka downloads, build output, venvs.
IGNORE = shutil.ignore_patterns(".git", ".kafka", ".make", "build", "dist", "*.egg-info",
                                "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache",
                                ".venv", "venv", "dropin.cache", "node_modules")
PACKAGE_MODULES = sorted(f"klag_collector/{p.name}" for p in (REPO / "klag_collector").glob("*.py"))
PLUGIN = "twisted/plugins/klag_plugin.py"


class Dists(NamedTuple):
    sdist: Path
    wheel: Path


def clean_env(**extra: str) -> Dict[str, str]:
    """The environment without anything that would let a child import the source tree."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def run(args: List[object], cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> Dists:
    """`python -m build` of a copy of the tree: the sdist, then the wheel built from it."""
    root = tmp_path_factory.mktemp("dist")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=IGNORE)
    out = root / "dist"
    built = run([sys.executable, "-m", "build", "--outdir", out, src], cwd=root)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [sdist] = out.glob("klag_collector-*.tar.gz")
    [wheel] = out.glob("klag_collector-*.whl")
    return Dists(sdist, wheel)


@pytest.fixture(scope="module")
def pipx_bin(dists, tmp_path_factory) -> Path:
    """`pipx install WHEEL` into a pipx home of its own; returns the folder of its commands."""
    home = tmp_path_factory.mktemp("pipx")
    dirs = {"PIPX_HOME": str(home / "home"), "PIPX_BIN_DIR": str(home / "bin"),
            "PIPX_MAN_DIR": str(home / "man")}
    installed = run([sys.executable, "-m", "pipx", "install", dists.wheel], cwd=home, **dirs)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return home / "bin"


def venv_python(pipx_bin: Path) -> Path:
    """The interpreter of the venv pipx made for klag-collector."""
    return pipx_bin.parent / "home" / "venvs" / "klag-collector" / "bin" / "python"


def test_wheel_carries_the_exporter_and_nothing_else(dists):
    """The wheel holds the package's modules, the twistd plugin and its metadata: no devtools, no tests."""
    names = set(zipfile.ZipFile(dists.wheel).namelist())
    info = f"klag_collector-{VERSION}.dist-info/"
    assert {n for n in names if not n.startswith(info)} == set(PACKAGE_MODULES) | {PLUGIN}
    # An __init__.py there would replace Twisted's own package when installed.
    assert "twisted/__init__.py" not in names and "twisted/plugins/__init__.py" not in names
    assert dists.wheel.name == f"klag_collector-{VERSION}-py3-none-any.whl"


def test_sdist_holds_the_source_of_the_wheel(dists):
    """The sdist has the package, the plugin, README, CHANGELOG and the build metadata."""
    top = f"klag_collector-{VERSION}/"
    with tarfile.open(dists.sdist) as tar:
        files: Set[str] = {m.name[len(top):] for m in tar.getmembers() if m.isfile()}
    egg_info = {n for n in files if n.startswith("klag_collector.egg-info/")}
    assert files - egg_info == set(PACKAGE_MODULES) | {
        PLUGIN, "README.md", "CHANGELOG.md", "setup.cfg", "pyproject.toml", "MANIFEST.in",
        "PKG-INFO"}


def test_twine_check_passes(dists):
    """`twine check dist/*` accepts both files (metadata and the README rendering)."""
    checked = run([sys.executable, "-m", "twine", "check", "--strict", dists.sdist, dists.wheel],
                  cwd=dists.wheel.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2, checked.stdout


def test_pipx_installed_command_prints_the_version(pipx_bin, tmp_path):
    """`klag-collector --version` from the pipx install prints the package version."""
    result = run([pipx_bin / "klag-collector", "--version"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"klag-collector {VERSION}"


def test_pipx_installed_command_checks_a_config(pipx_bin, tmp_path):
    """`klag-collector -c FILE --check` validates a config (0) and rejects a bad one (2)."""
    good = tmp_path / "config.toml"
    good.write_text('[exporter]\nhttp_port = 8123\n\n[[clusters]]\nname = "pkg"\n'
                    'bootstrap_servers = "127.0.0.1:9"\n')
    result = run([pipx_bin / "klag-collector", "-c", good, "--check"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"config {good} is valid" in result.stdout
    assert "cluster pkg: 127.0.0.1:9 (PLAINTEXT)" in result.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text('[exporter]\nhttp_port = 70000\n\n[[clusters]]\nname = "pkg"\n'
                   'bootstrap_servers = "127.0.0.1:9"\n')
    result = run([pipx_bin / "klag-collector", "-c", bad, "--check"], cwd=tmp_path)
    assert result.returncode == 2
    assert "http_port" in result.stderr


def test_pipx_venv_has_no_dev_tools_and_twistd_finds_the_plugin(pipx_bin, tmp_path):
    """In pipx's venv klag_collector is the installed copy, devtools is absent, twistd lists `klag`."""
    code = ("import importlib.util as u, klag_collector, twisted.plugin as p;"
            "from twisted.application.service import IServiceMaker;"
            "print(klag_collector.__file__);"
            "print(u.find_spec('devtools'));"
            "print(sorted(m.tapname for m in p.getPlugins(IServiceMaker)))")
    result = run([venv_python(pipx_bin), "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    location, devtools, plugins = result.stdout.splitlines()
    assert Path(location).resolve().is_relative_to(pipx_bin.parent.resolve())
    assert devtools == "None"
    assert "'klag'" in plugins
