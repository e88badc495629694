"""One value of a config, checked: a list of strings, an environment, and how a bad value is shown.

Shared by the job handlers (core/jobconf.py), the hosts' shares (core/hosts.py) and the storage keys
(storage/config.py), so that every message shows a bad value the same bounded way.
"""

import re
from collections.abc import Mapping

from galaxyctl_libs.core.yamlload import clip, clip_repr
from galaxyctl_libs.errors import GalaxyctlError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def str_list(value, where, key):
    """A list of strings; a single comma-separated string is accepted like Galaxy's listify."""
    items = () if value is None else value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        fail(where, key, "a list of strings", value)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            fail(where, f"{key}[{index}]", "a string", item)
    return tuple(item.strip() for item in items if item.strip())


def environment(value, where, key):
    """Ordered (name, value) pairs; scalars become strings, as in the rest of the config."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        fail(where, key, "a mapping of variable names to values", value)
    pairs = []
    for name, item in value.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise GalaxyctlError(f"{where}: {key}: {describe(name)} is not a valid environment variable name")
        if isinstance(item, bool):
            item = "true" if item else "false"
        elif item is None:
            item = ""
        elif not isinstance(item, (str, int, float)):
            fail(where, f"{key}.{name}", "a string", item)
        item = str(item)
        if "\n" in item or "\r" in item or "\0" in item:
            raise GalaxyctlError(f"{where}: {key}.{name}: must not contain a newline or NUL character")
        pairs.append((name, item))
    return tuple(pairs)


def describe(value):
    """A bad value as errors show it: a prefix of text (see config.SHOWN_CHARS), never a whole list or mapping."""
    if isinstance(value, (Mapping, list, tuple)):
        return "a mapping" if isinstance(value, Mapping) else "a list"
    if isinstance(value, str):
        return clip_repr(value)
    return f"{clip(repr(value))} ({type(value).__name__})"


def fail(where, key, expected, value):
    raise GalaxyctlError(f"{where}: {key}: expected {expected}, got {describe(value)}")
