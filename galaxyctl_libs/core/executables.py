"""Where Galaxy's programs are: the virtualenv's (gunicorn, celery, galaxy-main, uwsgi), else ours,
else PATH; and which gunicorn that is (its version decides a command-line option).

An ``instance`` here is a core.services.Instance (only its settings and config path are read).
"""

import functools
import os
import re
import sys

from galaxyctl_libs.errors import GalaxyctlError


def venv_bin(instance):
    """``gravity.virtualenv``'s bin directory, else None."""
    if instance.settings.virtualenv:
        return os.path.join(instance.settings.virtualenv, "bin")
    return None


def find_executable(instance, name, python_tool=True):
    """The virtualenv's copy if there is one, else galaxyctl's own venv, else PATH, else the bare name.

    With ``gravity.virtualenv`` set, Galaxy's Python tools (gunicorn, celery, galaxy-main, uwsgi) come
    from that venv only: a venv without them is an error, never a silent fall-back to galaxyctl's
    own gunicorn running Galaxy with the wrong Python.  ``npx`` and ``tusd`` may come from PATH.
    """
    bin_dir = venv_bin(instance)
    if bin_dir and python_tool:
        if not os.access(os.path.join(bin_dir, "python"), os.X_OK):
            raise GalaxyctlError(
                f"{instance.config_path}: gravity.virtualenv: {instance.settings.virtualenv} is not a virtualenv "
                "(no bin/python)"
            )
        if not os.access(os.path.join(bin_dir, name), os.X_OK):
            raise GalaxyctlError(
                f"{instance.config_path}: gravity.virtualenv: {bin_dir} has no {name}; install it there "
                "(pip install into Galaxy's virtualenv)"
            )
        return os.path.join(bin_dir, name)
    for directory in (bin_dir, os.path.dirname(sys.executable)):
        if directory and os.access(os.path.join(directory, name), os.X_OK):
            return os.path.join(directory, name)
    import shutil  # here, like the imports below: update pays only for what a config needs

    return shutil.which(name) or name


@functools.lru_cache(maxsize=None)
def gunicorn_version(gunicorn_exe, user=None, group=None):
    """The gunicorn version installed next to ``gunicorn_exe``: from its dist-info, else by asking it
    (as ``user``: as root, a program of the Galaxy user's venv never runs with root's ids)."""
    import glob

    prefix = os.path.dirname(os.path.dirname(os.path.realpath(gunicorn_exe))) if os.path.isabs(gunicorn_exe) else ""
    for info in (
        glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages", "gunicorn-*.dist-info")) if prefix else ()
    ):
        found = re.match(r"gunicorn-(\d+)\.(\d+)", os.path.basename(info))
        if found:
            return int(found.group(1)), int(found.group(2))
    import subprocess

    try:
        from galaxyctl_libs.rootpolicy import subprocess_credentials

        out = subprocess.run(
            [gunicorn_exe, "--version"],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
            **subprocess_credentials(user, group),
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"(\d+)\.(\d+)", out)
    return (int(found.group(1)), int(found.group(2))) if found else None
