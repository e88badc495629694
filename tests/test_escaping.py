"""Hostile values in supervisord's files: each reaches the process byte-exact, or galaxyctl refuses it in one line.

The end-to-end tests look only at the receiving end: ``/proc/PID/environ``, ``/proc/PID/cmdline`` and
``/proc/PID/cwd`` of the processes supervisord started, and the files supervisord itself opened; never at
the rendered text or ``exec -n``.  The unit tests feed the renderer's output to supervisor's own parser.
"""

import os
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import GALAXYCTL, Galaxyctl, free_port, wait_for
from galaxyctl_libs.core import jobconf
from galaxyctl_libs.backends.supervisor import client as supervisor_client
from galaxyctl_libs.backends.supervisor import render as sup
from galaxyctl_libs.demo import make_demo_galaxy
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.core.targets import Service

LONG = ("100% a ;b #c $HOME \\ q\"uote %(x)s ✓ " * 400)[:9999] + "z"  # 10 000 characters
HOSTILE = {
    "dquote": 'q"uote',
    "backslash": "back\\slash",
    "assignment": 'x="y"',
    "squote": "'single'",
    "percent": "100%",
    "expansion": "%(x)s",
    "env_expansion": "%(ENV_HOME)s",
    "here": "%(here)s",  # supervisor replaces this text in every value before expanding
    "semicolon": "a ;b",
    "hash": "a #b",
    "tab_semicolon": "a\t;b",
    "nbsp_hash": "a\u00a0#b",  # configparser's whitespace is str.isspace(), not only ASCII
    "separators": "a\u2028b\x85c\x1e;d\x0c#e",  # isspace(), yet no line break for configparser's file reading
    "dollar": "$HOME",
    "braces": "${HOME}",
    "backtick": "`id`",
    "comma": ",comma=eq",
    "unicode": "Grüße ✓",
    "long": LONG,
    "edges": "  lead and trail  ",
    "space": " ",
    "empty": "",
    "both_quotes_bare": "it's\"x",  # both quote characters, only word characters: a bare token
}
# supervisor's environment lexer has no escape character and strips quotes at both ends of a value
ENV_REFUSED = {"assignment": 'x="y"', "squote": "'single'", "both_quotes_spaced": "a'b \"c"}
ENV_CARRIED = {k: v for k, v in HOSTILE.items() if k not in ENV_REFUSED}
# as directory names (a path component holds at most 255 bytes)
PATH_VALUES = {k: v for k, v in HOSTILE.items() if k not in ("long", "empty")}
PATH_VALUES["long"] = LONG[:200]


# ---------------------------------------------------------------- helpers


def proc_cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().split(b"\0")[:-1]


def proc_environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as handle:
        return dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if item)


def encoded(values):
    return [v.encode() for v in values]


def supervisord_pids(state_dir):
    """{"group:name": PID} of the processes supervisord runs (asked in-process: no galaxyctl run per poll)."""
    infos = supervisor_client.SupervisorClient(sup.Paths(state_dir)).survey().processes or {}
    return {name: info["pid"] for name, info in infos.items() if info["pid"]}


def wait_for_pids(state_dir, names, timeout=30):
    found = wait_for(lambda: (lambda pids: pids if set(names) <= set(pids) else None)(supervisord_pids(state_dir)),
                     timeout=timeout, interval=0.1)
    assert found, f"not all of {names} got a PID: {supervisord_pids(state_dir)}"
    return found


def exec_done(pid, tail):
    """True once ``pid`` runs the program whose argv ends with ``tail`` (supervisord forks, then execs)."""
    return wait_for(lambda: proc_cmdline(pid)[-len(tail):] == tail, timeout=20)


def run(state_dir, *args):
    env = dict(os.environ, GALAXYCTL_ALLOW_ROOT="1")
    env.pop("GRAVITY_STATE_DIR", None)
    return subprocess.run([sys.executable, GALAXYCTL, "--state-dir", state_dir, *args], capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL, env=env)


def assert_one_line(result, *fragments):
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1, (result.returncode, stderr)
    lines = [line for line in stderr.splitlines() if not line.startswith("galaxyctl: warning:")]
    assert len(lines) == 1 and lines[0].startswith("galaxyctl: error: "), stderr
    assert "Traceback" not in stderr and all(f in lines[0] for f in fragments), stderr


def xml_safe(value):
    """``value`` without the control characters XML-RPC cannot carry (so a log dir may not have them)."""
    return "".join(char for char in value if char >= " " or char == "\t")


def entries(directory):
    return sorted(os.listdir(directory))


# ---------------------------------------------------------------- the renderer, read back by supervisor itself


def parse_with_supervisor(files, conf):
    """Write ``files`` and read them with supervisord's own option parser: what it would run."""
    from supervisor.options import ServerOptions

    for path, content in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(content)
    options = ServerOptions()
    options.configfile = conf
    options.process_config(do_usage=False)
    return options.configroot.supervisord


def one_service(**fields):
    base = dict(instance_name="_default_", service_type="standalone", service_name="h1", argv=("/bin/true",),
                environment=(), cwd="/")
    return Service(**{**base, **fields})


def round_trip(tmp, service, log_dir, grouped=False, extra=()):
    """Render ``service`` (plus ``extra`` instances when grouped), parse it with supervisor; its ProcessConfig."""
    import shlex

    state = os.path.join(tmp, "state")
    paths = sup.Paths(state)
    os.makedirs(log_dir, exist_ok=True)
    instances = {service.instance_name: (service,), **{s.instance_name: (s,) for s in extra}}
    files = sup.render_files(paths, instances, {name: log_dir for name in instances})
    parsed = parse_with_supervisor(files, paths.conf)
    assert [c["file"] for c in parsed.server_configs] == [paths.socket]
    assert (parsed.logfile, parsed.pidfile) == (paths.log, paths.pidfile)
    section, program = sup.program_names(service, grouped)
    group_name, _, process_name = program.rpartition(":") if grouped else (section, "", section)
    config = {g.name: g for g in parsed.process_group_configs}[group_name]
    process = {p.name: p for p in config.process_configs}[process_name]
    assert process.stdout_logfile == sup.log_file(service, log_dir, grouped)
    return shlex.split(process.command), process


def test_every_hostile_value_survives_supervisors_parser(tmp_path):
    venv_bin = str(tmp_path / "venv ;x %(here)s #y" / "bin")
    service = one_service(
        argv=("/bin/true", *HOSTILE.values()),
        environment=tuple((f"V_{name}", value) for name, value in ENV_CARRIED.items()),
        cwd="/srv/ a ;b #c %(here)s 100% ",
        path_prepend=(venv_bin,),
    )
    log_dir = str(tmp_path / "log %(here)s ;x %")
    argv, process = round_trip(str(tmp_path / "s a ;b #c %(ENV_HOME)s %"), service, log_dir)
    assert argv == list(service.argv)
    assert process.directory == service.cwd
    environment = dict(process.environment)
    assert environment.pop("PATH") == f"{venv_bin}:{os.environ['PATH']}"
    assert environment == dict(service.environment)


def test_grouped_programs_survive_supervisors_parser(tmp_path):
    first = one_service(instance_name="main", argv=("/bin/true", "a ;b"), environment=(("A", "%(here)s"),))
    second = one_service(instance_name="other.2", service_name="h2", argv=("/bin/echo", "%"))
    argv, process = round_trip(str(tmp_path), first, str(tmp_path / "log"), grouped=True, extra=(second,))
    assert argv == ["/bin/true", "a ;b"] and process.environment == {"A": "%(here)s"}


hostile_text = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\0"), max_size=30),
    st.lists(st.sampled_from([" ", "\t", "\x0b", "\u00a0", ";", "#", "%", "(", ")", "s", "here", "ENV_HOME",
                              "'", '"', "\\", ",", "=", "$", "`", "x", "ü"]), max_size=12).map("".join),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=hostile_text)
def test_fuzz_values_survive_supervisors_parser_or_are_refused(tmp_path_factory, value):
    tmp = str(tmp_path_factory.mktemp("fuzz"))
    try:
        sup._env_token(value, "V")
        carried = True
    except GalaxyctlError as exc:
        assert "\n" not in exc.message
        # refused only what supervisor's environment lexer cannot carry
        assert value.startswith(("'", '"')) or value.endswith(("'", '"')) or ("'" in value and '"' in value)
        carried = False
    service = one_service(argv=("/bin/true", value), environment=(("V", value),) if carried else (),
                          cwd="/srv/" + value)
    argv, process = round_trip(tmp, service, os.path.join(tmp, "log" + xml_safe(value).replace("/", "_")))
    assert argv == ["/bin/true", value]
    assert process.directory == "/srv/" + value
    assert process.environment == ({"V": value} if carried else {})


def test_golden_program_file():
    service = one_service(
        instance_name="_default_", service_name="handler0",
        argv=("/srv/galaxy/scripts/galaxy-main", "-c", "/srv/a ;b/galaxy.yml", "100%", "it's"),
        environment=(("A", 'q"uote'), ("B", "%(here)s #x")), cwd="/srv/galaxy ", path_prepend=("/srv/venv/bin",),
        start_timeout=20, stop_timeout=65,
    )
    assert sup.render_program(service, "/srv/log %", False) == (
        ";\n; Maintained by galaxyctl - CHANGES WILL BE OVERWRITTEN\n;\n\n"
        "[program:handler0]\n"
        "command = /srv/galaxy/scripts/galaxy-main -c '/srv/a %(here).0s;b/galaxy.yml' 100%% "
        "'it'\"'\"'s'\n"
        "directory = /srv/galaxy %(here).0s\n"
        "umask = 022\n"
        "autostart = true\n"
        "autorestart = true\n"
        "startsecs = 20\n"
        "stopwaitsecs = 65\n"
        "stopasgroup = true\n"
        "killasgroup = true\n"
        "environment = PATH=\"/srv/venv/bin:%(ENV_PATH)s\",A='q\"uote',B=\"%%(here%(here).0s)s %(here).0s#x\"\n"
        "process_name = %(program_name)s\n"
        "stdout_logfile = /srv/log %%%%/handler0.log\n"
        "redirect_stderr = true\n"
    )


def test_golden_supervisord_conf():
    assert sup.render_supervisord_conf(sup.Paths("/s ;1 %")) == (
        ";\n; Maintained by galaxyctl - CHANGES WILL BE OVERWRITTEN\n;\n"
        "\n[unix_http_server]\nfile = /s %(here).0s;1 %%/supervisor/supervisor.sock\nchmod = 0700\n"
        "\n[supervisord]\nlogfile = /s %(here).0s;1 %%/supervisor/supervisord.log\n"
        "pidfile = /s %(here).0s;1 %%/supervisor/supervisord.pid\nloglevel = info\nnodaemon = false\n"
        "\n[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        "\n[supervisorctl]\nserverurl = unix:///s %(here).0s;1 %%/supervisor/supervisor.sock\n"
        "\n[include]\nfiles = supervisord.conf.d/*.d/*.conf supervisord.conf.d/*.conf\n"
    )


@pytest.mark.parametrize("value, fragment", [
    ("'single'", "begins or ends with a quote"),
    ('x="y"', "begins or ends with a quote"),
    ("a'b \"c", "both quote characters"),
    ("a\nb", "newline"),
    ("a\x00b", "NUL"),
    ("\udcff", "UTF-8"),
])
def test_environment_values_supervisor_cannot_carry_are_refused_in_one_line(value, fragment):
    with pytest.raises(GalaxyctlError) as raised:
        sup.render_program(one_service(environment=(("V", value),)), "/log", False)
    assert fragment in raised.value.message and "\n" not in raised.value.message
    assert raised.value.message.startswith("_default_/h1: environment V ")


def test_long_values_are_cut_short_in_messages():
    with pytest.raises(GalaxyctlError) as raised:
        sup.render_program(one_service(argv=("/bin/true", LONG + "\n")), "/log", False)
    assert len(raised.value.message) < 300 and "command line argument" in raised.value.message


def test_log_dir_with_control_characters_is_refused():
    """supervisord's getProcessInfo answers with the log file's path; XML 1.0 cannot hold C0 controls."""
    with pytest.raises(GalaxyctlError, match="cannot carry control characters"):
        sup.render_program(one_service(), "/srv/log\x1ex", False)
    assert "/srv/log\tx/h1.log" in sup.render_program(one_service(), "/srv/log\tx", False)


@pytest.mark.parametrize("field, value", [
    ("instance_name", "a]b"), ("instance_name", "a b"), ("instance_name", "a:b"), ("instance_name", "a,b"),
    ("instance_name", "a%b"), ("instance_name", "a;b"), ("instance_name", ""), ("service_name", "h]1"),
    ("service_name", "h 1"), ("service_name", "h:1"), ("service_name", "h,1"), ("service_name", "%(x)s"),
])
def test_hostile_program_names_are_refused(field, value):
    service = one_service(**{field: value})
    for grouped in (False, True):
        with pytest.raises(GalaxyctlError, match="cannot name a supervisord program"):
            sup.program_names(service, grouped)


@pytest.mark.parametrize("handlers", [
    {"a]b": {}}, {"a:b": {}}, {"a,b": {}}, {"a b": {}}, {"a%b": {}}, {"a;b": {}}, {"h": {"name_template": "{name} x"}},
    {"h": {"name_template": "{name}]%"}}, {"h": {"name_template": "{name}:{process}"}},
])
def test_hostile_handler_names_are_refused(tmp_path, handlers):
    with pytest.raises(GalaxyctlError, match="cannot be a job handler name"):
        jobconf.load_job_handlers({}, str(tmp_path / "galaxy.yml"), handlers)


# ---------------------------------------------------------------- real processes: environment and argv


def test_environment_and_arguments_reach_the_processes_byte_exact(gctl, demo_galaxy):
    env = {f"GXT_{name}": value for name, value in ENV_CARRIED.items()}
    extra = [item for value in HOSTILE.values() for item in ("--statsd-prefix", value)]  # gunicorn ignores it
    pools = [value for value in HOSTILE.values() if value.strip()]  # gravity strips pool names
    config, _ = demo_galaxy(gravity={
        "gunicorn": {"environment": env, "extra_args": extra},
        "handlers": {"h1": {"environment": env, "pools": pools, "start_timeout": 1}},
    })
    gctl("register", config)
    gctl("start", "--no-wait")
    pids = wait_for_pids(gctl.state_dir, ["gunicorn:gunicorn", "h1:h1"])

    gunicorn = pids["gunicorn:gunicorn"]
    assert exec_done(gunicorn, encoded(extra)), proc_cmdline(gunicorn)
    handler = pids["h1:h1"]
    handler_tail = encoded(["--server-name=h1"] + [f"--attach-to-pool={p.strip()}" for p in pools])
    assert exec_done(handler, handler_tail), proc_cmdline(handler)
    for pid in (gunicorn, handler):
        received = proc_environ(pid)
        for name, value in env.items():
            assert received.get(name.encode()) == value.encode(), (pid, name)
        assert received[b"GALAXY_CONFIG_FILE"] == config.encode()
    gctl("stop")


@pytest.mark.parametrize("where", ["gunicorn", "handler"])
@pytest.mark.parametrize("value", list(ENV_REFUSED.values()), ids=list(ENV_REFUSED))
def test_environment_values_that_cannot_be_carried_are_refused_by_update(gctl, demo_galaxy, where, value):
    section = {"environment": {"GXT": value}}
    config, _ = demo_galaxy(gravity={"gunicorn": section} if where == "gunicorn" else {"handlers": {"h1": section}})
    gctl("register", config)
    service = "gunicorn" if where == "gunicorn" else "h1"
    assert_one_line(run(gctl.state_dir, "update"), f"_default_/{service}: environment GXT ", "supervisord cannot pass")
    assert not os.path.exists(os.path.join(gctl.state_dir, "supervisor"))


# ---------------------------------------------------------------- real processes: paths


def test_paths_reach_the_processes_byte_exact(gctl, short_tmp):
    """The config file's path (so the Galaxy root, working directory and GALAXY_CONFIG_FILE), log_dir and
    virtualenv, one instance per hostile value under one supervisord."""
    expected = {}
    for number, value in enumerate(PATH_VALUES.values()):
        root = os.path.join(short_tmp, value)
        venv = os.path.join(root, value, "venv")  # VIRTUAL_ENV may not end with a quote: see below
        log_dir = os.path.join(short_tmp, "logs", xml_safe(value))  # XML-RPC reports it: see below
        config = make_demo_galaxy(root, free_port(), gravity={
            "instance_name": f"i{number}", "gunicorn": {"enable": False}, "log_dir": log_dir, "virtualenv": venv,
            "handlers": {"h1": {"start_timeout": 1}},
        })
        expected[f"i{number}:h1"] = (root, config, venv, log_dir)
    gctl("register", *[config for _, config, _, _ in expected.values()])
    gctl("start", "--no-wait")
    pids = wait_for_pids(gctl.state_dir, list(expected))
    for key, (root, config, venv, log_dir) in expected.items():
        pid = pids[key]
        tail = encoded([os.path.join(root, "scripts", "galaxy-main"), "-c", config, "--server-name=h1"])
        assert exec_done(pid, tail), (key, proc_cmdline(pid))
        assert os.readlink(f"/proc/{pid}/cwd".encode()) == root.encode()
        received = proc_environ(pid)
        assert received[b"GALAXY_CONFIG_FILE"] == config.encode()
        assert received[b"PYTHONPATH"] == os.path.join(root, "lib").encode()
        assert received[b"VIRTUAL_ENV"] == venv.encode()
        # an element, not the prefix: a pyenv shim for the demo's '/usr/bin/env python3' prepends its own
        assert os.path.join(venv, "bin").encode() in received[b"PATH"].split(b":")
        # supervisord opened the log file at exactly this path
        log = os.path.join(log_dir, f"{key.split(':')[0]}_galaxy_standalone_h1.log")
        assert wait_for(lambda: os.path.exists(log) and "demo handler h1" in open(log, encoding="utf-8").read(),
                        timeout=20), (key, os.listdir(log_dir) if os.path.isdir(log_dir) else None)
    gctl("stop")  # supervisord stops one group at a time when it is itself told to end: slow for many


@pytest.mark.parametrize("where, value, fragment", [
    ("root", "g\nx", "cannot carry a newline"),
    ("root", "it's \"q\"", "environment GALAXY_CONFIG_FILE"),
    ("log_dir", "log\nx", "gravity.log_dir: must not contain a newline"),
    ("log_dir", "log\x1ex", "supervisord reports log file paths over XML-RPC"),
    ("virtualenv", "/v\rx", "gravity.virtualenv: must not contain a newline"),
    ("virtualenv", "/v:x", "PATH cannot carry a ':' in a directory"),
    ("virtualenv", "/srv/'venv'", "environment VIRTUAL_ENV \"/srv/'venv'\": supervisord cannot pass"),
])
def test_paths_that_cannot_be_carried_are_refused_by_update(gctl, short_tmp, where, value, fragment):
    root = os.path.join(short_tmp, value if where == "root" else "g")
    # the handler alone (scripts/galaxy-main): gunicorn would first need a real virtualenv
    gravity = {"handlers": {"h1": {}}, "gunicorn": {"enable": False}}
    if where != "root":
        gravity[where] = value
    config = make_demo_galaxy(root, free_port(), gravity=gravity)
    registered = run(gctl.state_dir, "register", config)
    if registered.returncode == 0:
        result = run(gctl.state_dir, "update")
    else:
        result = registered
    assert_one_line(result, fragment)
    assert not os.path.exists(os.path.join(gctl.state_dir, "supervisor"))


# ---------------------------------------------------------------- real processes: the state dir


STATE_DIRS = [
    # (state dir name, where a value cut at the first whitespace + ';'/'#' would end)
    ("s a ;b #c %(here)s %(ENV_HOME)s 100%", "s a"),
    ("s\tq\"u 'x' $HOME Grüße ✓ a\t#b ", "s\tq\"u 'x' $HOME Grüße ✓ a"),
]


@pytest.mark.parametrize("name, truncated", STATE_DIRS, ids=["comment-characters", "quotes-tab-unicode"])
def test_state_dir_with_comment_characters_is_used_exactly(short_tmp, name, truncated):
    """A state dir with whitespace + ';'/'#': supervisord binds, logs and writes its pid exactly there, and
    nothing outside the state dir is created or replaced (the old renderer bound the socket at the cut path)."""
    galaxy = os.path.join(short_tmp, "g")
    config = make_demo_galaxy(galaxy, free_port(), gravity={"gunicorn": {"enable": False},
                                                           "handlers": {"h1": {"start_timeout": 1}}})
    precious = os.path.join(short_tmp, truncated)
    with open(precious, "w") as handle:
        handle.write("precious\n")
    before = entries(short_tmp)
    gctl = Galaxyctl(os.path.join(short_tmp, name))
    try:
        gctl("register", config)
        gctl("start", "--no-wait")
        pid = wait_for_pids(gctl.state_dir, ["h1:h1"])["h1:h1"]
        paths = sup.Paths(gctl.state_dir)
        assert gctl.supervisord_pid() is not None  # read from the pid file at the exact path
        assert os.path.exists(paths.socket) and os.path.exists(paths.log)
        log = os.path.join(gctl.state_dir, "log", "h1.log")
        assert wait_for(lambda: os.path.exists(log) and "demo handler h1" in open(log).read(), timeout=20)
        assert "h1 " in gctl("supervisorctl", "status", check=False).stdout  # it read serverurl exactly
        assert exec_done(pid, encoded(["--server-name=h1"]))
        assert entries(short_tmp) == sorted(set(before) | {name})
        with open(precious) as handle:
            assert handle.read() == "precious\n"
    finally:
        gctl.cleanup()


def test_state_dir_with_a_newline_is_refused(short_tmp):
    config = make_demo_galaxy(os.path.join(short_tmp, "g"), free_port())
    state_dir = os.path.join(short_tmp, "s\nx")
    assert run(state_dir, "register", config).returncode == 0
    before = entries(short_tmp)
    assert_one_line(run(state_dir, "update"), "state dir '", "newline")
    assert entries(short_tmp) == before and not os.path.exists(os.path.join(state_dir, "supervisor"))


def test_instance_name_from_a_hand_edited_state_file_is_refused(gctl, demo_galaxy):
    config, _ = demo_galaxy()
    gctl("register", config)
    state_file = os.path.join(gctl.state_dir, "configstate.yaml")
    with open(state_file) as handle:
        data = yaml.safe_load(handle)
    data["config_files"][config]["instance_name"] = "x]\n[program:evil"
    with open(state_file, "w") as handle:
        yaml.safe_dump(data, handle)
    assert_one_line(run(gctl.state_dir, "update"), "instance name ", "cannot name a supervisord program")
    assert not os.path.exists(os.path.join(gctl.state_dir, "supervisor"))
