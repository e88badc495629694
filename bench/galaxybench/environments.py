"""The two venvs next to ``bench/run.py``, reused on later runs (delete one to rebuild it).

``bench/.venv-gravity`` holds ``gravity==1.2.4`` (or the newest gravity that installs) + gunicorn +
celery; ``bench/.venv-ours`` holds this checkout + gunicorn + celery.  Ours is re-installed on every
run from a staged copy of the checkout, so the figures are those of the current code and no build
files land in the checkout.  As root, the venvs are built from an interpreter the bench user can
execute (``--base-python``, else this interpreter if it can, else ``/usr/bin/python3``).
"""

import json
import os
import platform
import pwd
import re
import shutil
import subprocess
import sys
import time

from .common import BENCH, REPO, log

GRAVITY_PIN = "gravity==1.2.4"


def _usable_by_user(runner, python):
    try:
        return runner.run([python, "-c", "import venv, ensurepip"], home="/", timeout=30)["rc"] == 0
    except OSError:
        return False


def choose_base_python(runner, requested):
    candidates = [requested] if requested else [sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"]
    for candidate in candidates:
        if candidate and os.path.exists(candidate) and _usable_by_user(runner, candidate):
            return candidate
    raise SystemExit(
        f"bench: no Python interpreter usable by user {runner.user!r} among {candidates}; pass --base-python"
    )


def _pip(venv, *args):
    argv = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--quiet", "--use-pep517", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    noise = re.compile(r"Location .* is ignored|^\s*$")
    err = "\n".join(line for line in result.stderr.splitlines() if not noise.search(line))
    return result.returncode, err


def _venv_ok(runner, venv, probe):
    python = os.path.join(venv, "bin", "python")
    return os.path.exists(python) and runner.run([python, "-c", probe], home="/", timeout=60)["rc"] == 0


def _make_venv(base_python, venv):
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([base_python, "-m", "venv", venv], check=True, timeout=300)


def ensure_gravity_venv(runner, base_python):
    venv = os.path.join(BENCH, ".venv-gravity")
    if not _venv_ok(runner, venv, "import gravity, gunicorn, celery"):
        log(f"creating {venv}")
        _make_venv(base_python, venv)
        rc, err = _pip(venv, GRAVITY_PIN, "gunicorn", "celery")
        if rc != 0:
            log(f"{GRAVITY_PIN} did not install ({err.strip().splitlines()[-1:]}); trying the newest gravity")
            rc, err = _pip(venv, "gravity", "gunicorn", "celery")
            if rc != 0:
                raise SystemExit(f"bench: gravity does not install:\n{err}")
    return venv


def _stage_checkout(dest):
    """A copy of what ``pip install`` of the checkout needs, so pip builds nothing inside the checkout."""
    os.makedirs(dest)
    for name in (
        "setup.py",
        "setup.cfg",
        "pyproject.toml",
        "MANIFEST.in",
        "README.rst",
        "CHANGELOG.rst",
        "galaxyctl",
        "LICENSE",
    ):
        source = os.path.join(REPO, name)
        if os.path.isfile(source):
            shutil.copy2(source, dest)
    shutil.copytree(
        os.path.join(REPO, "galaxyctl_libs"),
        os.path.join(dest, "galaxyctl_libs"),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    staged_readme = not os.path.exists(os.path.join(dest, "README.rst"))
    if staged_readme:  # setup.py reads it: a checkout without one still installs
        with open(os.path.join(dest, "README.rst"), "w") as handle:
            handle.write("galaxyctl\n=========\n")
    return staged_readme


def ensure_ours_venv(runner, base_python, workdir):
    venv = os.path.join(BENCH, ".venv-ours")
    if not _venv_ok(runner, venv, "import yaml, supervisor, gunicorn, celery"):
        log(f"creating {venv}")
        _make_venv(base_python, venv)
        rc, err = _pip(venv, "pyyaml", "supervisor", "gunicorn", "celery")
        if rc != 0:
            raise SystemExit(f"bench: dependencies of ours do not install:\n{err}")
    return venv, install_checkout(venv, workdir)


def install_checkout(venv, workdir):
    """This checkout's galaxyctl into ``venv`` (re-installed each run); True if its README was stubbed."""
    staged = os.path.join(workdir, "staged-checkout")
    stub_readme = _stage_checkout(staged)
    rc, err = _pip(venv, "--no-deps", "--force-reinstall", staged)
    shutil.rmtree(staged, ignore_errors=True)
    if rc != 0:
        raise SystemExit(f"bench: pip install of the checkout failed:\n{err}")
    return stub_readme


def venv_versions(venv):
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        "for d in ('gravity', 'galaxyctl', 'gunicorn', 'celery', 'supervisor', 'pydantic'):\n"
        "    try: out[d] = m.version(d)\n"
        "    except Exception: pass\n"
        "print(json.dumps(out))"
    )
    result = subprocess.run(
        [os.path.join(venv, "bin", "python"), "-c", code], capture_output=True, text=True, timeout=60, cwd="/"
    )
    return json.loads(result.stdout or "{}")


def describe_run(runner, runs, long_runs, base_python, gravity_venv, ours_venv, stub_readme):
    """The JSON's "meta": host, run counts, who the tools run as, the interpreters and package versions."""
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "runs": runs,
        "long_runs": long_runs,
        "run_as": runner.user if runner.uid is not None else pwd.getpwuid(os.geteuid()).pw_name,
        "base_python": base_python,
        "gravity_venv": venv_versions(gravity_venv),
        "ours_venv": venv_versions(ours_venv),
        "ours_installed_with_stub_readme": stub_readme,
    }


def ensure_gravity_for_galaxy(galaxy_venv):
    """gravity 1.2.4 that sees an installed Galaxy, as it does when admins pip-install it into Galaxy's venv.

    gravity picks its handler command by whether ``import galaxy`` works (``galaxy-main`` when it
    does, ``./scripts/galaxy-main`` of a source tree when not).  Rather than install gravity into the
    cached Galaxy venv the end-to-end tests share, it gets a venv of its own, built from Galaxy's
    interpreter, with a ``.pth`` that appends Galaxy's site-packages after gravity's own packages.
    """
    venv = os.path.join(BENCH, ".venv-gravity-galaxy")
    probe = "import gravity.state as s, sys; sys.exit(0 if s.galaxy_installed else 1)"
    if _runs(venv, probe):
        return venv
    log(f"creating {venv} ({GRAVITY_PIN}, seeing the Galaxy in {galaxy_venv})")
    _make_venv(_galaxy_python(galaxy_venv), venv)
    rc, err = _pip(venv, GRAVITY_PIN)
    if rc != 0:
        raise SystemExit(f"bench: {GRAVITY_PIN} does not install:\n{err}")
    with open(os.path.join(_purelib(venv), "zz-galaxy-venv.pth"), "w") as handle:
        handle.write(_purelib(galaxy_venv) + "\n")
    if not _runs(venv, probe):
        raise SystemExit(f"bench: gravity in {venv} does not see the Galaxy in {galaxy_venv}")
    return venv


def _galaxy_python(galaxy_venv):
    return os.path.realpath(os.path.join(galaxy_venv, "bin", "python"))


def _runs(venv, code):
    """Does ``venv`` exist and run ``code`` with exit status 0 (as the bench's own user)?"""
    python = os.path.join(venv, "bin", "python")
    return os.path.exists(python) and subprocess.run([python, "-c", code], timeout=120).returncode == 0


def _purelib(venv):
    """``venv``'s site-packages, as its interpreter says."""
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    python = os.path.join(venv, "bin", "python")
    return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120).stdout.strip()


def ensure_ours_for_galaxy(galaxy_venv, workdir):
    """galaxyctl (this checkout) + its two dependencies, in a venv built from Galaxy's interpreter.

    As root with a Galaxy user, supervisord runs as that user with galaxyctl's interpreter, so it
    must be one the user can execute (not, say, a pyenv build under /root).
    """
    venv = os.path.join(BENCH, ".venv-ours-galaxy")
    if not _runs(venv, "import yaml, supervisor"):
        log(f"creating {venv}")
        _make_venv(_galaxy_python(galaxy_venv), venv)
        rc, err = _pip(venv, "pyyaml", "supervisor")
        if rc != 0:
            raise SystemExit(f"bench: galaxyctl's dependencies do not install:\n{err}")
    install_checkout(venv, workdir)
    return venv
