"""Laniakea's galaxyctl_libs uWSGI names, kept working as its README shows them.

``UwsgiSocket(fname=...).get_uwsgi_master_pid()`` and ``UwsgiStatsServer(...)`` with
``GetUwsgiStatsServer()`` / ``GetBusyList()``: a thin layer over the uWSGI config reader and the
stats-server probe (galaxyctl_libs.probes.uwsgi), where the PEP 8 names are primary.
"""

from galaxyctl_libs.probes.uwsgi import UwsgiSocket, UwsgiStatsServer  # noqa: F401 - re-exported

__all__ = ["UwsgiSocket", "UwsgiStatsServer"]
