"""systemd's unit files as rendered: golden text, hostile values read back by a reader that follows
systemd's documented rules and checked by systemd-analyze where it is installed, refusals (pure)."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from hostile_values import HOSTILE

from galaxyctl_libs.backends.systemd import render as sd
from galaxyctl_libs.backends.systemd.backend import SystemdBackend
from galaxyctl_libs.backends.systemd.client import SystemdController
from galaxyctl_libs.core import state
from galaxyctl_libs.core.registration import LOG_DIR_UNUSED_UNDER_SYSTEMD, resolve
from galaxyctl_libs.core.services import build_services
from galaxyctl_libs.core.targets import Service
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.records import replace

PY = sys.executable
STATE = "/srv/state"
CONFIG = "/srv/galaxy/config/galaxy.yml"
VENV = "/srv/galaxy/venv/bin"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
EXTRA_HOSTILE = {
    "specifier": "%i",
    "specifiers": "%n%%%H",
    "newline": "a\nb",
    "controls": "t\tr\rx\x01\x7f",
    "cr_end": "end\\",
    "dollar_dollar": "$$",
    "lone_dollar": "$",
    "semicolon_word": ";",
}
ALL_HOSTILE = {**HOSTILE, **EXTRA_HOSTILE}


def service(name, service_type="standalone", argv=None, environment=(), **fields):
    env = (("GALAXY_CONFIG_FILE", CONFIG),) + tuple(environment) + (("GALAXYCTL_SERVICE", f"_default_/{name}"),)
    base = dict(
        instance_name="_default_",
        service_type=service_type,
        service_name=name,
        argv=tuple(argv or (PY, "-c", "pass")),
        environment=env,
        cwd="/srv/galaxy/server",
        path_prepend=(VENV,),
        user="galaxy",
        group="galaxy",
    )
    return Service(**{**base, **fields})


def rich_services():
    gunicorn_argv = (f"{VENV}/gunicorn", "galaxy.webapps.galaxy.fast_factory:factory()", "-b", "127.0.0.1:8080")
    handlers = [
        service(
            f"handler_{n}",
            argv=(f"{VENV}/galaxy-main", "-c", CONFIG, f"--server-name=handler_{n}"),
            start_timeout=20,
            stop_timeout=65,
            gravity_service="handler",
            process_number=n,
            process_count=2,
        )
        for n in (0, 1)
    ]
    return (
        service(
            "gunicorn",
            "gunicorn",
            argv=gunicorn_argv + ("--preload",),
            graceful="herder",
            bind="127.0.0.1:8080",
            stop_timeout=15,
            memory_limit=8,
            memory_high=6.5,
        ),
        service("celery", "celery", argv=(f"{VENV}/celery", "--app", "galaxy.celery", "worker"), memory_limit=2),
        *handlers,
    )


GOLDEN_HEAD = """\
# Maintained by galaxyctl - CHANGES WILL BE OVERWRITTEN
# galaxyctl-state={state_id}

[Unit]
Description=Galaxy {name}
After=network.target time-sync.target
PartOf=galaxy.target

[Service]
Type=simple
User=galaxy
Group=galaxy
WorkingDirectory=/srv/galaxy/server
UMask=0022
Environment="PATH=/srv/galaxy/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
Environment="GALAXY_CONFIG_FILE=/srv/galaxy/config/galaxy.yml"
Environment="GALAXYCTL_SERVICE=_default_/{name}"
"""
GOLDEN_TAILS = {
    "galaxy-gunicorn.service": """\
ExecStart="{py}" "-m" "galaxyctl_libs.backends.herder" "--pidfile" "/run/galaxyctl/x/_default__gunicorn.pid" \
"--bind" "127.0.0.1:8080" "--ready-path" "/api/version" "--ready-timeout" "300" "--stop-timeout" "10" "--" \
"/srv/galaxy/venv/bin/gunicorn" "galaxy.webapps.galaxy.fast_factory:factory()" "-b" "127.0.0.1:8080" "--preload"
RuntimeDirectory=galaxyctl/x
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
ExecReload=/bin/kill -s HUP $MAINPID
KillMode=mixed
TimeoutStartSec=10
TimeoutStopSec=15
Restart=always
MemoryMax=8G
MemoryHigh=6.5G
""",
    "galaxy-celery.service": """\
ExecStart="/srv/galaxy/venv/bin/celery" "--app" "galaxy.celery" "worker"
TimeoutStartSec=10
TimeoutStopSec=10
Restart=always
MemoryMax=2G
""",
    "galaxy-handler@.service": """\
ExecStart="/srv/galaxy/venv/bin/galaxy-main" "-c" "/srv/galaxy/config/galaxy.yml" "--server-name=handler_%i"
TimeoutStartSec=20
TimeoutStopSec=65
Restart=always
""",
}
GOLDEN_TARGET = """\
# Maintained by galaxyctl - CHANGES WILL BE OVERWRITTEN
# galaxyctl-state={state_id}

[Unit]
Description=Galaxy
After=network.target time-sync.target
Wants=galaxy-gunicorn.service
Wants=galaxy-celery.service
Wants=galaxy-handler@0.service
Wants=galaxy-handler@1.service

[Install]
WantedBy=multi-user.target
"""


def test_golden_units_for_gunicorn_celery_and_two_handlers():
    assert '"' not in PY and "\\" not in PY and "%" not in PY and "$" not in PY
    paths = sd.Paths(STATE, "/etc/systemd/system", run_dir="/run/galaxyctl/x")
    files = sd.render_units(paths, {"_default_": rich_services()})
    expected = {
        os.path.join("/etc/systemd/system", unit): GOLDEN_HEAD.format(
            state_id=paths.state_id, name=unit[7:-8].replace("@", "_%i")
        )
        + tail.format(py=PY)
        for unit, tail in GOLDEN_TAILS.items()
    }
    expected["/etc/systemd/system/galaxy.target"] = GOLDEN_TARGET.format(state_id=paths.state_id)
    assert files == expected


def test_journal_without_log_dir_and_user_mode_drops_user_and_installs_in_default_target():
    paths = sd.Paths(STATE, "/home/g/.config/systemd/user", user_mode=True)
    files = sd.render_units(paths, {"_default_": rich_services()[1:2]})
    unit = files["/home/g/.config/systemd/user/galaxy-celery.service"]
    assert "StandardOutput" not in unit and "User=" not in unit and "Group=" not in unit
    assert files["/home/g/.config/systemd/user/galaxy.target"].endswith("WantedBy=default.target\n")


def test_log_dir_is_never_a_unit_output_and_is_said_to_be_unused_once(gctl, demo_galaxy, short_tmp):
    """systemd opens an output file as root, following links: with a log_dir (even /etc) the units
    still log to the journal only, and update says once that log_dir is not used."""
    handlers = {"handler": {"processes": 2}}
    config, _ = demo_galaxy(gravity={"process_manager": "systemd", "log_dir": "/etc", "handlers": handlers})
    instance, _, warnings = resolve(state.ConfigRecord(path=config), gctl.state_dir, enforce_user=False)
    assert SystemdBackend().log_dir(instance) is None and instance.settings.log_dir == "/etc"
    assert [w for w in warnings if "log_dir" in w] == [f"{config}: {LOG_DIR_UNUSED_UNDER_SYSTEMD}"]
    home = os.path.join(short_tmp, "home")
    result = gctl("--user", "-c", config, "update", env={**gctl.env, "HOME": home})
    said = [line for line in result.stderr.splitlines() if "log_dir" in line]
    assert said == [f"galaxyctl: warning: {config}: {LOG_DIR_UNUSED_UNDER_SYSTEMD}"]
    unit_dir = os.path.join(home, ".config", "systemd", "user")
    units = {name: open(os.path.join(unit_dir, name)).read() for name in os.listdir(unit_dir)}
    assert {"galaxy-gunicorn.service", "galaxy-handler@.service", "galaxy.target"} <= set(units)
    for text in units.values():
        assert "StandardOutput" not in text and "append:" not in text and "file:" not in text
    assert not any(name.endswith(".log") and name.startswith(("gunicorn", "handler")) for name in os.listdir("/etc"))


def test_names_with_instances_templates_and_backend():
    backend = SystemdBackend(unit_dir="/u")
    handler = service("handler_3", instance_name="main", gravity_service="handler", process_number=3, process_count=4)
    assert backend.target_name(handler, grouped=False) == "galaxy-main-handler@3.service"
    alone = replace(handler, gravity_service=None, process_number=None, process_count=1)  # use_service_instances: false
    assert backend.target_name(service("gunicorn", "gunicorn"), grouped=True) == "galaxy-_default_-gunicorn.service"
    assert (
        sd.target_unit("_default_", False) == "galaxy.target" and sd.target_unit("main", False) == "galaxy-main.target"
    )
    assert SystemdBackend().target_name(alone, False) == "galaxy-main-handler_3.service"
    one = replace(handler, process_number=0, process_count=1)  # gravity: a one-process handler is no template
    assert backend.target_name(one, False) == "galaxy-main-handler.service"
    assert backend.log_file(handler, None, False) is None and backend.log_file(handler, "/l", True) is None
    paths = backend.paths(STATE)
    assert (paths.unit_dir, backend.managed_dir(paths)) == ("/u", os.path.join(STATE, "systemd"))
    assert isinstance(backend.controller(paths), SystemdController)
    files = SystemdBackend(unit_dir="/u").render(
        paths, {"x": tuple(ungrouped(s, "x") for s in rich_services()[2:])}, {}
    )
    assert sorted(files) == ["/u/galaxy-x-handler_0.service", "/u/galaxy-x-handler_1.service", "/u/galaxy-x.target"]


def ungrouped(service, instance_name=None):
    """``service`` as built with use_service_instances: false (a service of its own)."""
    fields = {"instance_name": instance_name} if instance_name else {}
    return replace(service, gravity_service=None, process_number=None, process_count=1, **fields)


def test_template_instances_expand_to_each_handlers_own_unit():
    paths = sd.Paths(STATE, "/u")
    handlers = rich_services()[2:]
    template = sd.render_units(paths, {"_default_": handlers})["/u/galaxy-handler@.service"]
    alone = sd.render_units(paths, {"_default_": tuple(map(ungrouped, handlers))})
    for n in (0, 1):
        assert sd.expand_specifiers(template, str(n)) == sd.expand_specifiers(alone[f"/u/galaxy-handler_{n}.service"])


def gunicorn_list():
    """A gravity gunicorn list of two (use_service_instances): different binds, umasks and timeouts."""
    return tuple(
        service(
            f"gunicorn_{n}",
            "gunicorn",
            argv=(f"{VENV}/gunicorn", "galaxy.webapps.galaxy.fast_factory:factory()", "-b", f"127.0.0.1:808{n}"),
            graceful="hup",
            bind=f"127.0.0.1:808{n}",
            umask=("022", "027")[n],
            stop_timeout=(15, 30)[n],
            environment=(("ONLY_1", "x"),) if n else (),
            gravity_service="gunicorn",
            process_number=n,
            process_count=2,
        )
        for n in (0, 1)
    )


def service_lines(text):
    return sorted(text.partition("\n[Service]\n")[2].splitlines())


def test_a_gunicorn_list_is_gravitys_template_with_each_instances_own_drop_in():
    """gravity's galaxy-gunicorn@.service with @0, @1; what differs between the two (bind, umask,
    timeouts, environment) is in each instance's drop-in, which carries our marker."""
    paths = sd.Paths(STATE, "/u")
    files = sd.render_units(paths, {"_default_": gunicorn_list()})
    drop_ins = [f"/u/galaxy-gunicorn@{n}.service.d/galaxyctl.conf" for n in (0, 1)]
    assert sorted(files) == ["/u/galaxy-gunicorn@.service", *drop_ins, "/u/galaxy.target"]
    assert "Wants=galaxy-gunicorn@0.service\nWants=galaxy-gunicorn@1.service\n" in files["/u/galaxy.target"]
    template = files["/u/galaxy-gunicorn@.service"]
    assert "Description=Galaxy gunicorn_%i\n" in template and "ExecStart" not in template
    alone = sd.render_units(paths, {"_default_": tuple(map(ungrouped, gunicorn_list()))})
    for n in (0, 1):
        drop_in = files[drop_ins[n]]
        assert drop_in.startswith(f"{sd.HEADER}{sd.OWNER_KEY}{paths.state_id}\n[Service]\n")
        merged = service_lines(sd.expand_specifiers(template, str(n))) + drop_in.split("[Service]\n")[1].splitlines()
        own = alone[f"/u/galaxy-gunicorn_{n}.service"]
        assert sorted(merged) == service_lines(sd.expand_specifiers(own))


# ---------------------------------------------------------------- reading back by systemd's rules

_C_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "s": " ",
}


def split_words(text):
    """systemd's extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE): words split at whitespace,
    double or single quotes group, backslash escapes as in C (\\xNN too); anything else is an error."""
    words, word, quote, i, in_word = [], [], None, 0, False
    while i < len(text):
        char = text[i]
        if char == "\\":
            nxt = text[i + 1]
            if nxt == "x":
                word.append(chr(int(text[i + 2 : i + 4], 16)))
                i += 4
            else:
                word.append(_C_ESCAPES[nxt])  # KeyError: an escape systemd would refuse
                i += 2
            in_word = True
            continue
        if quote:
            if char == quote:
                quote = None
            else:
                word.append(char)
        elif char in "\"'":
            quote, in_word = char, True
        elif char in " \t":
            if in_word:
                words.append("".join(word))
            word, in_word = [], False
        else:
            word.append(char)
            in_word = True
        i += 1
    assert quote is None, "unterminated quote"
    if in_word:
        words.append("".join(word))
    return words


def specifiers(word, instance=""):
    assert not re.search(r"%[^%i]", word.replace("%%", "")), f"unexpected specifier in {word!r}"
    return sd.expand_specifiers(word, instance)


def dollars(word):
    """systemd's $-expansion at exec time: we never want a variable replaced, only $$ → $."""
    assert not re.search(r"\$[^$]", word.replace("$$", "")) and not word.replace("$$", "").endswith("$")
    return word.replace("$$", "$")


def read_unit(text):
    """``{key: [values]}`` of a unit file, lines joined and stripped as systemd reads them."""
    values = {}
    for line in text.split("\n"):
        line = line.strip(" \t")
        if not line or line[0] in "#;[":
            continue
        assert not line.endswith("\\"), "a continued line"
        key, _, value = line.partition("=")
        values.setdefault(key, []).append(value.strip(" \t"))
    return values


def exec_argv(text):
    return [dollars(specifiers(w)) for w in split_words(read_unit(text)["ExecStart"][0])]


def environment(text):
    return dict(specifiers(split_words(v)[0]).split("=", 1) for v in read_unit(text)["Environment"])


def hostile_units(directory):
    units = {}
    for index, (label, value) in enumerate(sorted(ALL_HOSTILE.items())):
        units[label] = service(
            f"h{index}", argv=(PY, "-c", "pass", value, f"--x={value}"), environment=(("HOSTILE", value),)
        )
    paths = sd.Paths(STATE, directory)
    files = sd.render_units(paths, {"_default_": tuple(units.values())})
    return units, {label: files[os.path.join(directory, sd.unit_name(s, False))] for label, s in units.items()}, files


@pytest.mark.parametrize("label", sorted(ALL_HOSTILE))
def test_hostile_values_come_back_exact(label):
    value = ALL_HOSTILE[label]
    units, texts, _ = hostile_units("/u")
    assert exec_argv(texts[label]) == [PY, "-c", "pass", value, f"--x={value}"]
    env = environment(texts[label])
    assert env["HOSTILE"] == value and env["PATH"].startswith(VENV + ":")
    assert len(split_words(read_unit(texts[label])["ExecStart"][0])) == 5


@pytest.mark.skipif(not SYSTEMD_ANALYZE, reason="systemd-analyze is not installed (Debian's systemd package)")
def test_systemd_analyze_verify_accepts_every_unit(tmp_path):
    units, _, files = hostile_units(str(tmp_path))
    rich = tuple(replace(s, instance_name="rich") for s in rich_services()[1:] + gunicorn_list())
    rich = sd.render_units(sd.Paths(STATE, str(tmp_path)), {"rich": rich})
    for path, content in {**files, **rich}.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # stand-ins for Galaxy's programs: systemd-analyze checks that each command exists
        content = re.sub(r'"/srv/galaxy/venv/bin/[a-z-]+"', '"/bin/true"', content)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(content.replace("/srv/galaxy/server", str(tmp_path)))
    names = [os.path.basename(p) for p in {**files, **rich} if "@" not in p]
    names += [f"galaxy-rich-{name}@{n}.service" for name in ("handler", "gunicorn") for n in (0, 1)]
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:", "SYSTEMD_LOG_COLOR": "0"}
    run = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *names], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (run.returncode, run.stderr) == (0, "")


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(cwd="/srv/a\nb"), "line break"),
        (dict(cwd="srv"), "absolute path"),
        (dict(cwd="/srv/../etc"), "absolute path"),
        (dict(cwd="/srv/x "), "whitespace"),
        (dict(argv=(PY, "a\0b")), "NUL"),
        (dict(argv=("bin/python",)), "bare program name"),
        (dict(argv=("/opt/$x/python",)), "containing '\\$'"),
        (dict(argv=("-python",)), "not beginning"),
        (dict(environment=(("1X", "v"),)), "not a valid environment variable name"),
        (dict(environment=(("X", "\udcff"),)), "not valid UTF-8"),
        (dict(path_prepend=("/a:b",)), "PATH cannot carry"),
        (dict(user="gal axy "), "whitespace"),
        (dict(umask="9"), "octal"),
        (dict(memory_limit=-1), "positive number"),
        (dict(service_name="h/1"), "cannot name a systemd unit"),
    ],
)
def test_refused_in_one_line(fields, message):
    with pytest.raises(GalaxyctlError, match=message) as raised:
        sd.render_units(sd.Paths(STATE, "/u"), {"_default_": (service("h1", **fields),)})
    assert "\n" not in str(raised.value)


def test_refused_collisions():
    paths = sd.Paths(STATE, "/u")
    with pytest.raises(GalaxyctlError, match="would both be galaxy-a-b-c.service"):
        sd.render_units(paths, {"a-b": (service("c", instance_name="a-b"),), "a": (service("b-c", instance_name="a"),)})
    with pytest.raises(GalaxyctlError, match="would both be galaxy-handler@0.service"):
        handler = rich_services()[2]
        sd.render_units(paths, {"_default_": (handler, replace(handler, service_name="other"))})


def test_memory_sizes():
    assert [sd.memory_size(v, "m") for v in (None, 0, 2, 2.0, 1.5, 1e-9)] == [None, None, "2G", "2G", "1.5G", "1"]


def test_services_carry_memory_settings_per_service_else_global(tmp_path):
    config = tmp_path / "galaxy.yml"
    gravity = {"memory_limit": 8, "celery": {"memory_high": 2, "memory_limit": 3}}
    config.write_text(yaml.safe_dump({"gravity": gravity, "galaxy": {}}))
    instance, _, _ = resolve(state.ConfigRecord(path=str(config)), str(tmp_path / "state"), enforce_user=False)
    services = {s.service_name: s for s in build_services(instance)}
    assert (services["gunicorn"].memory_limit, services["gunicorn"].memory_high) == (8, None)
    assert (services["celery"].memory_limit, services["celery"].memory_high) == (3, 2)


GRAVITY_UNIT = (
    ";\n; This file is maintained by Gravity - CHANGES WILL BE OVERWRITTEN\n;\n\n[Unit]\nDescription=Galaxy {}\n"
)


def test_update_replaces_gravitys_units_and_never_touches_anyone_elses(tmp_path):
    """A site moving over from gravity: gravity's target and the units it wants are gravity's (its
    header); ours replace them, gravity's units we do not write (its older names) go, an admin's
    unit is left alone, and a file of the admin's where ours would go is refused, nothing written."""
    from galaxyctl_libs.backends.systemd.client import write_units, written_by

    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    gravity_target = (
        GRAVITY_UNIT.format("") + "Wants=galaxy-gunicorn.service galaxy-handler_0.service galaxy-handler_1.service\n"
    )
    gravity_units = {"galaxy.target": gravity_target}
    gravity_units.update(
        {f"galaxy-{n}.service": GRAVITY_UNIT.format(n) for n in ("gunicorn", "handler_0", "handler_1")}
    )
    gravity_units["galaxy-unrelated.service"] = GRAVITY_UNIT.format("of another gravity config")
    for name, text in gravity_units.items():
        (unit_dir / name).write_text(text)
    (unit_dir / "galaxy-admin.service").write_text("[Unit]\nDescription=the admin's own\n")
    paths = sd.Paths(str(tmp_path / "state"), str(unit_dir))
    files = sd.render_units(paths, {"_default_": rich_services()})
    changes = write_units(paths, files)
    assert sorted(os.listdir(unit_dir)) == [
        "galaxy-admin.service",
        "galaxy-celery.service",
        "galaxy-gunicorn.service",
        "galaxy-handler@.service",
        "galaxy-unrelated.service",  # not wanted by the target we replaced: not ours to judge
        "galaxy.target",
    ]
    assert sorted(os.path.basename(p) for p in changes.removed) == [
        "galaxy-handler_0.service",
        "galaxy-handler_1.service",
    ]
    assert all(written_by(path) == "galaxyctl" for path in files)
    assert written_by(str(unit_dir / "galaxy-admin.service")) == "other"
    (unit_dir / "galaxy-celery.service").write_text("[Unit]\nDescription=the admin's celery\n")
    os.remove(unit_dir / "galaxy-gunicorn.service")
    with pytest.raises(
        GalaxyctlError, match="galaxy-celery.service exists and was written neither by galaxyctl nor by gravity"
    ):
        write_units(paths, files)
    assert not os.path.exists(unit_dir / "galaxy-gunicorn.service")  # refused before anything was written
