"""galaxyctl beside gravity in one virtualenv (README.rst, "Installing beside gravity"), with real pip:
both install ``galaxyctl`` and ``galaxy``, the last one installed wins, the commands that start or
change things say so once per state dir (``status`` never does), ``pip uninstall galaxyctl`` leaves
neither command, and reinstalling gravity brings its own back.  gravity 1.2.4 comes from PyPI
(``--no-deps``: only its scripts and records matter here); the test is skipped when PyPI is out of
reach."""

import os
import subprocess
import sys

import pytest
from conftest import GRAVITY_VERSION, _pypi_unreachable, install_checkout

TIMEOUT = 600
NOTE = "galaxyctl: note: gravity 1.2.4 is installed in this environment too"


def _pip(venv, *args):
    return subprocess.run(
        [os.path.join(venv, "bin", "python"), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=TIMEOUT,
    )


def _install_gravity(venv, *options):
    installed = _pip(venv, "install", "-q", "--no-deps", *options, f"gravity=={GRAVITY_VERSION}")
    if installed.returncode != 0:
        if _pypi_unreachable(installed.stdout + installed.stderr):
            pytest.skip(f"PyPI unreachable: {installed.stderr.strip()[-300:]}")
        pytest.fail(f"pip install gravity failed:\n{installed.stdout}\n{installed.stderr}")


def _script(venv, name):
    with open(os.path.join(venv, "bin", name), encoding="utf-8") as handle:
        return handle.read()


def _galaxyctl(venv, state_dir, *args):
    return subprocess.run(
        [os.path.join(venv, "bin", "galaxyctl"), "--state-dir", state_dir, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_galaxyctl_beside_gravity(tmp_path):
    venv, state_dir = str(tmp_path / "venv"), str(tmp_path / "state")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    _install_gravity(venv)
    assert "from gravity" in _script(venv, "galaxyctl") and "from gravity" in _script(venv, "galaxy")

    install_checkout(venv)  # the last one installed wins
    assert "galaxyctl_libs" in _script(venv, "galaxyctl") and "galaxyctl_libs" in _script(venv, "galaxy")

    os.mkdir(state_dir, 0o700)
    first = _galaxyctl(venv, state_dir, "update")  # nothing registered: update fails, after the note
    assert NOTE in first.stderr, first.stderr
    assert os.path.join(venv, "bin") in first.stderr and "galaxy and galaxyctl commands" in first.stderr
    assert first.stderr.count("galaxyctl: note:") == 1
    again = _galaxyctl(venv, state_dir, "update")
    assert "note:" not in again.stderr, again.stderr  # said once per state dir
    other = str(tmp_path / "other-state")
    assert NOTE in _galaxyctl(venv, other, "register", "/nonexistent/galaxy.yml").stderr
    assert "note:" not in _galaxyctl(venv, str(tmp_path / "third"), "status").stderr  # never from status

    removed = _pip(venv, "uninstall", "-y", "galaxyctl")
    assert removed.returncode == 0, removed.stderr
    assert not os.path.exists(os.path.join(venv, "bin", "galaxyctl"))  # gravity's is gone too
    assert not os.path.exists(os.path.join(venv, "bin", "galaxy"))

    _install_gravity(venv, "--force-reinstall")  # the README's way back
    assert "from gravity" in _script(venv, "galaxyctl") and "from gravity" in _script(venv, "galaxy")
