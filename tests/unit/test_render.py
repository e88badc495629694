"""supervisord's files as rendered, read back by supervisor's own parser; golden text; refusals (pure: no process)."""

import os

import pytest
from hostile_values import ENV_CARRIED, ENV_REFUSED, HOSTILE, LONG, xml_safe  # noqa: F401 - shared table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from galaxyctl_libs.backends.supervisor import render as sup
from galaxyctl_libs.core import jobconf
from galaxyctl_libs.core.targets import Service
from galaxyctl_libs.errors import GalaxyctlError


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
    base = dict(
        instance_name="_default_",
        service_type="standalone",
        service_name="h1",
        argv=("/bin/true",),
        environment=(),
        cwd="/",
    )
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


def test_the_processes_of_one_handler_entry_share_one_file_and_keep_their_names(tmp_path):
    """supervisord reads include files one by one, going over every section read so far after
    each: a file per process made 2,000 handlers cost 8 s of its start (render.program_file_name)."""
    handlers = tuple(
        one_service(service_name=f"handler_{n}", gravity_service="handler", process_number=n, process_count=3)
        for n in range(3)
    )
    celery = one_service(service_type="celery", service_name="celery")
    paths, log_dir = sup.Paths(str(tmp_path / "state")), tmp_path / "log"
    log_dir.mkdir()
    files = sup.render_files(paths, {"_default_": (celery, *handlers)}, {"_default_": str(log_dir)})
    instance_dir = os.path.join(paths.conf_dir, "_default_.d")
    assert sorted(os.path.relpath(path, paths.root) for path in files) == [
        "supervisord.conf",
        "supervisord.conf.d/_default_.d/galaxy_celery_celery.conf",
        "supervisord.conf.d/_default_.d/galaxy_standalone_handler.conf",
        "supervisord.conf.d/_default_.d/group_handler.conf",
    ]
    assert files[os.path.join(instance_dir, "galaxy_standalone_handler.conf")].count(sup.HEADER) == 1
    parsed = parse_with_supervisor(files, paths.conf)
    groups = {group.name: sorted(p.name for p in group.process_configs) for group in parsed.process_group_configs}
    assert groups == {"celery": ["celery"], "handler": ["handler_0", "handler_1", "handler_2"]}


hostile_text = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\0"), max_size=30),
    st.lists(
        st.sampled_from(
            [
                " ",
                "\t",
                "\x0b",
                "\u00a0",
                ";",
                "#",
                "%",
                "(",
                ")",
                "s",
                "here",
                "ENV_HOME",
                "'",
                '"',
                "\\",
                ",",
                "=",
                "$",
                "`",
                "x",
                "ü",
            ]
        ),
        max_size=12,
    ).map("".join),
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
    service = one_service(
        argv=("/bin/true", value), environment=(("V", value),) if carried else (), cwd="/srv/" + value
    )
    argv, process = round_trip(tmp, service, os.path.join(tmp, "log" + xml_safe(value).replace("/", "_")))
    assert argv == ["/bin/true", value]
    assert process.directory == "/srv/" + value
    assert process.environment == ({"V": value} if carried else {})


def test_golden_program_file():
    service = one_service(
        instance_name="_default_",
        service_name="handler0",
        argv=("/srv/galaxy/scripts/galaxy-main", "-c", "/srv/a ;b/galaxy.yml", "100%", "it's"),
        environment=(("A", 'q"uote'), ("B", "%(here)s #x")),
        cwd="/srv/galaxy ",
        path_prepend=("/srv/venv/bin",),
        start_timeout=20,
        stop_timeout=65,
    )
    assert sup.render_program(service, "/srv/log %", False) == (
        ";\n; Maintained by galaxyctl - CHANGES WILL BE OVERWRITTEN\n;\n\n"
        "[program:handler0]\n"
        "command = /srv/galaxy/scripts/galaxy-main -c '/srv/a %(here).0s;b/galaxy.yml' 100%% "
        "'it'\"'\"'s'\n"
        "directory = /srv/galaxy %(here).0s\n"
        "umask = 022\n"
        "autostart = false\n"
        "autorestart = true\n"
        "startsecs = 20\n"
        "stopwaitsecs = 65\n"
        "stopasgroup = true\n"
        "killasgroup = true\n"
        'environment = PATH="/srv/venv/bin:%(ENV_PATH)s",A=\'q"uote\',B="%%(here%(here).0s)s %(here).0s#x"\n'
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


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("'single'", "begins or ends with a quote"),
        ('x="y"', "begins or ends with a quote"),
        ("a'b \"c", "both quote characters"),
        ("a\nb", "newline"),
        ("a\x00b", "NUL"),
        ("\udcff", "UTF-8"),
    ],
)
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


@pytest.mark.parametrize(
    "field, value",
    [
        ("instance_name", "a]b"),
        ("instance_name", "a b"),
        ("instance_name", "a:b"),
        ("instance_name", "a,b"),
        ("instance_name", "a%b"),
        ("instance_name", "a;b"),
        ("instance_name", ""),
        ("service_name", "h]1"),
        ("service_name", "h 1"),
        ("service_name", "h:1"),
        ("service_name", "h,1"),
        ("service_name", "%(x)s"),
    ],
)
def test_hostile_program_names_are_refused(field, value):
    service = one_service(**{field: value})
    for grouped in (False, True):
        with pytest.raises(GalaxyctlError, match="cannot name a supervisord program"):
            sup.program_names(service, grouped)


@pytest.mark.parametrize(
    "handlers",
    [
        {"a]b": {}},
        {"a:b": {}},
        {"a,b": {}},
        {"a b": {}},
        {"a%b": {}},
        {"a;b": {}},
        {"h": {"name_template": "{name} x"}},
        {"h": {"name_template": "{name}]%"}},
        {"h": {"name_template": "{name}:{process}"}},
    ],
)
def test_hostile_handler_names_are_refused(tmp_path, handlers):
    with pytest.raises(GalaxyctlError, match="cannot be a job handler name"):
        jobconf.load_job_handlers({}, str(tmp_path / "galaxy.yml"), handlers)


def test_supervisord_limits_grow_with_the_site():
    """A small site keeps supervisord's defaults (the file as before); 2,000 processes get the open
    files (a line our launcher reads: minfds would cost every spawn a close per descriptor) and the
    processes supervisord needs for them."""
    small = sup.render_supervisord_conf(sup.Paths("/s"), processes=10)
    assert "open files" not in small and "minprocs" not in small and "minfds" not in small
    big = sup.render_supervisord_conf(sup.Paths("/s"), processes=2001)
    fds, procs = sup.supervisord_limits(2001)
    assert f"\nnodaemon = false\n; galaxyctl: open files = {fds}\nminprocs = {procs}\n\n[rpcinterface:" in big
    assert "minfds" not in big and fds >= 4 * 2001 and procs > 2001
    from galaxyctl_libs.backends.supervisor import launch

    assert launch.open_files_wanted(big) == fds and launch.open_files_wanted(small) == 0


def test_the_launcher_raises_the_soft_limit_of_open_files_up_to_the_hard_one():
    """Run in a child (the limits are the process's): up to the hard limit it raises the soft one;
    above it, one line saying so, and the limits unchanged."""
    import subprocess
    import sys

    code = (
        "import resource\n"
        "from galaxyctl_libs.backends.supervisor.launch import raise_open_files\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "limit = min(hard, 4096)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, limit))\n"
        "print(raise_open_files(32), resource.getrlimit(resource.RLIMIT_NOFILE))\n"
        "print(raise_open_files(limit // 2), resource.getrlimit(resource.RLIMIT_NOFILE), limit // 2)\n"
        "print(raise_open_files(10**6), resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    first, second, third = lines.splitlines()
    assert first.startswith("None (64, ") and second.startswith(f"None ({second.split()[-1]}, ")
    assert "needs 1000000 open files" in third and f"({second.split()[-1]}, " in third
