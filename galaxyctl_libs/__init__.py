"""galaxyctl_libs: Galaxy process management and health checks, usable from your own scripts.

Importing this package has no side effects: nothing is read, opened or logged until you call
something.  Names are loaded lazily from their modules::

    from galaxyctl_libs import UwsgiSocket, UwsgiStatsServer, DetectGalaxyCommands
    from galaxyctl_libs import load_config, status
"""

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "GalaxyctlError": "errors",
    "load_config": "config",
    "parse_gravity": "config",
    "GravitySettings": "config",
    "load_state": "state",
    "default_state_dir": "fsutil",
    "register": "operations",
    "deregister": "operations",
    "update": "operations",
    "start": "lifecycle",
    "stop": "lifecycle",
    "restart": "lifecycle",
    "graceful": "lifecycle",
    "shutdown": "lifecycle",
    "status": "monitoring",
    "probe": "health",
    "parse_bind": "health",
    "listening_pids": "listeners",
    "listening_master_pid": "listeners",
    "DetectGalaxyCommands": "detect",
    "detect_galaxy_commands": "detect",
    "UwsgiSocket": "uwsgi",
    "UwsgiStatsServer": "uwsgi",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'galaxyctl_libs' has no attribute {name!r}")
    import importlib  # here, not at the top: every galaxyctl run imports this package

    value = getattr(importlib.import_module(f"galaxyctl_libs.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
