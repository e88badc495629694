"""A package others may use: ``python -m build`` makes an sdist and a wheel that ``twine check
--strict`` accepts, both carry the licence and the changelog, and the version has one source."""

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

from conftest import REPO

import galaxyctl_libs


def test_build_and_twine_check(tmp_path):
    source = tmp_path / "src"  # a copy: the build writes galaxyctl.egg-info beside the sources
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv*", ".git", "*.egg-info", "build", "dist"))
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "WARNING" not in built.stdout + built.stderr, built.stdout + built.stderr
    version = galaxyctl_libs.__version__
    sdist = tmp_path / f"galaxyctl-{version}.tar.gz"
    wheel = tmp_path / f"galaxyctl-{version}-py3-none-any.whl"
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with tarfile.open(sdist) as archive:
        names = {os.path.relpath(name, f"galaxyctl-{version}") for name in archive.getnames()}
    assert {"LICENSE", "CHANGELOG.rst", "README.rst", "galaxyctl", "scripts/quickstart_servers.py"} <= names
    # the sdist's tests run as they do from a clone: test_readme reads CONTRIBUTING.rst and .ci/run
    assert {"CONTRIBUTING.rst", ".ci/run", "tests/unit/test_readme.py", "tests/conftest.py"} <= names
    # the README's Ansible example, which tests/test_two_hosts.py runs
    assert {"examples/ansible/rolling-graceful.yml", "examples/ansible/inventory.ini"} <= names
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"galaxyctl-{version}.dist-info/METADATA").decode()
    assert f"galaxyctl-{version}.dist-info/licenses/LICENSE" in names
    assert "Changelog\n=========" in metadata and f"Version: {version}" in metadata  # the changelog too
    assert "License: MIT" in metadata or "License-Expression: MIT" in metadata
    assert "\nAuthor: " in metadata and "\nRequires-Python: >=3.9\n" in metadata
    # the classifiers name the Pythons the suite runs on (CI's included): a new one is added once tested
    tested = f"Classifier: Programming Language :: Python :: {sys.version_info.major}.{sys.version_info.minor}\n"
    assert tested in metadata, f"setup.py's classifiers lack the Python running the tests ({tested.strip()})"


def test_the_changelog_names_this_version():
    with open(os.path.join(REPO, "CHANGELOG.rst"), encoding="utf-8") as handle:
        text = handle.read()
    release = re.match(r"\d+\.\d+\.\d+", galaxyctl_libs.__version__).group(0)
    assert re.search(rf"^{re.escape(release)}\b", text, re.M), f"CHANGELOG.rst has no entry for {release}"
