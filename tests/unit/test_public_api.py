"""What admins' scripts and older supervisor files rely on keeps working after the house moved."""

import subprocess
import sys

import galaxyctl_libs


def test_laniakea_and_readme_names_import_from_the_package():
    from galaxyctl_libs import DetectGalaxyCommands, UwsgiSocket, UwsgiStatsServer  # noqa: F401

    for name in galaxyctl_libs.__all__:
        assert getattr(galaxyctl_libs, name) is not None, name
    assert callable(UwsgiStatsServer.GetUwsgiStatsServer) and callable(UwsgiStatsServer.GetBusyList)


def test_the_old_herder_module_still_runs():
    """supervisor files written by an older galaxyctl run ``python -m galaxyctl_libs.herder``."""
    result = subprocess.run(
        [sys.executable, "-m", "galaxyctl_libs.herder", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0 and "--pidfile" in result.stdout
