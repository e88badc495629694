"""Zero downtime, measured: a bounded client loop runs during ``galaxyctl graceful``."""

import os
import threading
import urllib.request

import yaml
from conftest import http_get, wait_for


def client_loop(urls, count, failures, served, stop):
    """``count`` requests spread over ``urls``; every error or non-200 is a failure."""
    for index in range(count):
        if stop.is_set():
            break
        url = urls[index % len(urls)]
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status != 200:
                    failures.append(response.status)
                served.append(response.status)
        except OSError as exc:
            failures.append(repr(exc))


def graceful_under_load(gctl, urls, count=400):
    failures, served, stop = [], [], threading.Event()
    client = threading.Thread(target=client_loop, args=(urls, count, failures, served, stop))
    client.start()
    try:
        wait_for(lambda: len(served) >= 20, timeout=30)  # the loop is under way before the reload
        gctl("graceful", "--timeout", "120")
        client.join(timeout=180)
    finally:
        stop.set()
        client.join(timeout=30)
    return failures, served


def bump_version(config, version):
    with open(os.path.join(os.path.dirname(os.path.dirname(config)), "VERSION"), "w") as handle:
        handle.write(f"{version}\n")


def test_graceful_without_preload_drops_no_request(gctl, demo_galaxy):
    config, port = demo_galaxy(gravity={"gunicorn": {"preload": False, "workers": 2}})
    gctl("register", config)
    gctl("start", "--timeout", "60")
    url = f"http://127.0.0.1:{port}/api/version"
    bump_version(config, 2)
    failures, served = graceful_under_load(gctl, [url])
    assert failures == [] and len(served) >= 300
    assert wait_for(lambda: http_get(url)[1]["version_minor"] == "2", timeout=30)
    gctl("stop")


def test_rolling_graceful_of_a_gunicorn_list_drops_no_request(gctl, demo_galaxy):
    from conftest import free_port

    ports = [free_port(), free_port()]
    config, _ = demo_galaxy(gravity={"gunicorn": [{"bind": f"127.0.0.1:{p}", "workers": 1} for p in ports]})
    gctl("register", config)
    out = gctl("start", "--timeout", "60").stdout
    assert "gunicorn_0: ready" in out and "gunicorn_1: ready" in out
    urls = [f"http://127.0.0.1:{p}/api/version" for p in ports]
    before = [http_get(u)[1]["pid"] for u in urls]
    bump_version(config, 3)
    failures, served = graceful_under_load(gctl, urls)
    assert failures == [] and len(served) >= 300
    after = [http_get(u)[1] for u in urls]
    assert [a["version_minor"] for a in after] == ["3", "3"]
    assert all(a["pid"] != b for a, b in zip(after, before))
    rows = yaml.safe_load(gctl("status", "--json").stdout)["services"]
    assert sorted(r["service"] for r in rows if r["state"] in ("RUNNING", "STARTING")) == ["gunicorn_0", "gunicorn_1"]

    # each instance was reloaded by its herder (galaxyctl waits for one before it starts the next)
    def logs():
        return [open(os.path.join(gctl.state_dir, "log", f"gunicorn_{i}.log")).read() for i in (0, 1)]

    assert wait_for(lambda: all("reload complete" in log for log in logs()), timeout=30), logs()
    gctl("stop")
