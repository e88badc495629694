"""galaxyctl_libs: Galaxy process management and health checks, usable from your own scripts.

Importing this package has no side effects: nothing is read, opened or logged until you call
something.  Names are loaded lazily from their modules::

    from galaxyctl_libs import UwsgiSocket, UwsgiStatsServer, DetectGalaxyCommands
    from galaxyctl_libs import load_config, status
"""

__version__ = "0.2.0.dev0"

# public name -> module that defines it
_EXPORTS = {
    "GalaxyctlError": "errors",
    "load_config": "core.config",
    "parse_gravity": "core.config",
    "GravitySettings": "core.config",
    "load_state": "core.state",
    "default_state_dir": "fsutil",
    "enter_state_dir": "rootpolicy",
    "register": "core.registration",
    "deregister": "core.registration",
    "update": "backends.update",
    "start": "actions.lifecycle",
    "stop": "actions.lifecycle",
    "restart": "actions.lifecycle",
    "graceful": "actions.rolling",
    "shutdown": "actions.lifecycle",
    "status": "actions.monitoring",
    "probe": "probes.http",
    "parse_bind": "probes.http",
    "listening_pids": "probes.listeners",
    "listening_master_pid": "probes.listeners",
    "DetectGalaxyCommands": "compat.detect",
    "detect_galaxy_commands": "compat.detect",
    "UwsgiSocket": "compat.uwsgi",
    "UwsgiStatsServer": "compat.uwsgi",
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
