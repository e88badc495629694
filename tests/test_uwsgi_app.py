"""``app_server: uwsgi`` from a legacy galaxy.ini, and ``galaxyctl workers`` for uWSGI and gunicorn."""

import os
import threading
import urllib.request

import yaml
from conftest import free_port, http_get, wait_for

INI = """\
[uwsgi]
; a legacy Galaxy uWSGI section
socket = 127.0.0.1:{socket}
http = 127.0.0.1:{http}
stats = 127.0.0.1:{stats}
master = true
processes = 2
threads = 1
pythonpath = lib
module = galaxy.webapps.galaxy.uwsgi_app
die-on-term = true

[app:main]
database_connection = sqlite:///database/universe.sqlite
"""


def slow_request(url, results):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            results.append(response.status)
    except OSError as exc:
        results.append(exc)


def workers_json(gctl):
    return yaml.safe_load(gctl("workers", "--json").stdout)


def test_uwsgi_from_galaxy_ini_with_busy_workers(gctl, demo_galaxy):
    config, _ = demo_galaxy()
    ports = {"socket": free_port(), "http": free_port(), "stats": free_port()}
    ini = os.path.join(os.path.dirname(config), "galaxy.ini")
    with open(ini, "w") as handle:
        handle.write(INI.format(**ports))
    gctl("register", ini)
    out = gctl("start", "--timeout", "60").stdout
    assert "uwsgi: ready on" in out
    url = f"http://127.0.0.1:{ports['http']}"
    assert http_get(url + "/api/version")[0] == 200
    assert "--ini" in gctl("exec", "-n", "uwsgi").stdout

    [web] = workers_json(gctl)
    assert web["server"] == "uwsgi" and len(web["workers"]) == 2
    results = []
    thread = threading.Thread(target=slow_request, args=(url + "/slow?seconds=3", results))
    thread.start()
    try:
        busy = wait_for(lambda: [w for w in workers_json(gctl)[0]["workers"] if w["status"] == "busy"], timeout=10)
        assert len(busy) == 1
    finally:
        thread.join(timeout=30)
    assert results == [200]

    gctl("graceful", "--timeout", "60")
    assert wait_for(lambda: _ok(url + "/api/version"), timeout=30)
    gctl("stop")


def test_uwsgi_from_galaxy_yml_uwsgi_section(gctl, demo_galaxy):
    ports = {"socket": free_port(), "http": free_port(), "stats": free_port()}
    uwsgi = {
        "socket": f"127.0.0.1:{ports['socket']}",
        "http": f"127.0.0.1:{ports['http']}",
        "stats": f"127.0.0.1:{ports['stats']}",
        "master": True,
        "processes": 2,
        "pythonpath": "lib",
        "module": "galaxy.webapps.galaxy.uwsgi_app",
        "die-on-term": True,
    }
    config, _ = demo_galaxy(gravity={"app_server": "uwsgi"})
    data = yaml.safe_load(open(config))
    data["uwsgi"] = uwsgi
    with open(config, "w") as handle:
        yaml.safe_dump(data, handle)
    gctl("register", config)
    assert f"--yaml {config}" in gctl("exec", "-n", "uwsgi").stdout
    assert "uwsgi: ready on" in gctl("start", "--timeout", "60").stdout
    assert http_get(f"http://127.0.0.1:{ports['http']}/api/version")[0] == 200
    assert gctl("status").returncode == 0
    gctl("stop")


def test_gunicorn_busy_worker_shows_its_connection(gctl, demo_galaxy):
    config, port = demo_galaxy(gravity={"gunicorn": {"workers": 2}})
    gctl("register", config)
    gctl("start", "--timeout", "60")
    url = f"http://127.0.0.1:{port}"
    assert wait_for(lambda: len(workers_json(gctl)[0]["workers"]) == 2, timeout=30)
    results = []
    thread = threading.Thread(target=slow_request, args=(url + "/slow?seconds=3", results))
    thread.start()
    try:
        busy = wait_for(lambda: [w for w in workers_json(gctl)[0]["workers"] if w["status"] == "busy"], timeout=10)
        assert len(busy) == 1 and busy[0]["connections"] == 1 and busy[0]["rss_bytes"] > 0
    finally:
        thread.join(timeout=30)
    assert results == [200]
    text = gctl("workers").stdout
    assert "gunicorn (gunicorn, master" in text and "idle" in text
    gctl("stop")


def _ok(url):
    try:
        return http_get(url, timeout=2)[0] == 200
    except OSError:
        return False
