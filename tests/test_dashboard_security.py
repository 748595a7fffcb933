"""The dashboard against a hostile web page and hostile requests (issue #23, section 5): DNS rebinding
(a foreign Host is refused without a token), cross-origin requests that could change something,
malformed requests that must not flood the log, and /api/prompt run lists that must stay cheap.

Each server is the real one (`serve`, or the CLI) on 127.0.0.1 with a free port, in a thread of this
process so its log lines reach caplog; requests go out as raw HTTP so the Host header is what a
rebinding browser would send."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from aiohttp.log import server_logger
from dashboard_runs import make_run

from rl.dashboard.guard import QuietServerLog, host_name, origin_name
from rl.dashboard.runs import RunRegistry
from rl.dashboard.server import MAX_COMPARE_RUNS, _refresh_all, bind, parser, serve

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_run(root / "demo", steps=3)
    make_run(root / "other", steps=2)
    return root


@contextlib.contextmanager
def served(root: Path, host: str = "127.0.0.1", **kw):
    """`serve` on host:<free port> in a thread (runs read before the first request); yields the port."""
    sock = bind(host, 0)
    registry = RunRegistry([root])
    _refresh_all(registry)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    task = loop.create_task(serve(registry, sock, kw.pop("token", None), ready=ready.set, **kw))
    thread = threading.Thread(target=lambda: loop.run_until_complete(asyncio.wait([task])), daemon=True)
    thread.start()
    assert ready.wait(30), "the dashboard did not start"
    try:
        yield sock.getsockname()[1]
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(30)
        loop.close()


def request(port: int, path: str, host: str | None = None, method: str = "GET", headers=None,
            addr: str = "127.0.0.1") -> tuple[int, bytes]:
    """One request sent as given: `host` is the Host header verbatim (default addr:port)."""
    conn = http.client.HTTPConnection(addr, port, timeout=30)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host if host is not None else f"{addr}:{port}")
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.putheader("Content-Length", "0")
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def raw_status(port: int, data: bytes) -> int:
    """Send bytes no HTTP client would (a 100 KB URL, bytes that are not UTF-8); the answer's status."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        head = s.recv(64)
    return int(head.split()[1])


# ---------------------------------------------------------------------- Host (DNS rebinding)
@pytest.mark.parametrize("value, name", [
    ("localhost", "localhost"), ("LOCALHOST:8300", "localhost"), ("127.0.0.1:8300", "127.0.0.1"),
    ("[::1]:8300", "::1"), ("[::1]", "::1"), ("evil.example", "evil.example"),
    ("evil@localhost", None), ("localhost:8300/x", None), ("localhost:port", None), ("", None),
    ("local host", None),
])
def test_host_name_parses_only_real_host_values(value, name):
    assert host_name(value) == name


def test_a_foreign_host_is_refused_without_data(runs):
    with served(runs) as port:
        status, body = request(port, "/api/run/demo/rollouts")
        assert status == 200 and b"toy-" in body
        for host in ("evil.example", f"evil.example:{port}", "localhost.evil.example", "127.0.0.1.nip.io",
                     "", "evil@127.0.0.1"):
            for path in ("/api/run/demo/rollouts", "/api/runs", "/", "/static/app.js",
                         "/api/prompt?runs=demo&prompt_id=toy-0"):
                status, body = request(port, path, host=host)
                assert status == 421, (host, path, status)
                assert b"toy-" not in body and b"demo" not in body and b"<html" not in body.lower()
                assert body.decode().count("\n") == 1 and "--allow-host" in body.decode()


def test_loopback_names_and_the_bound_address_are_answered(runs):
    with served(runs) as port:
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", "127.0.0.1", f"[::1]:{port}",
                     f"LocalHost:{port}"):
            status, body = request(port, "/api/run/demo/rollouts", host=host)
            assert status == 200 and b"toy-" in body, host
    with served(runs, host="127.0.0.2") as port:  # another loopback address: the bound one is answered
        assert request(port, "/api/runs", addr="127.0.0.2")[0] == 200
        assert request(port, "/api/runs", addr="127.0.0.2", host=f"127.0.0.3:{port}")[0] == 421


def test_allow_host_adds_a_name(runs):
    assert parser().parse_args(["r", "--allow-host", "box.lan", "--allow-host", "tunnel"]).allow_host == \
        ["box.lan", "tunnel"]
    with served(runs, allow_hosts=["box.lan", "Tunnel"]) as port:
        for host in (f"box.lan:{port}", "box.lan", f"tunnel:{port}"):
            assert request(port, "/api/runs", host=host)[0] == 200, host
        assert request(port, "/api/runs", host=f"evil.example:{port}")[0] == 421


def test_the_cli_passes_allow_host(runs):
    """The real command: --allow-host reaches the server, a foreign Host is still refused."""
    proc = subprocess.Popen([sys.executable, "-m", "rl.cli", "dashboard", str(runs / "demo"), "--port", "0",
                             "--allow-host", "box.lan"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    try:
        line = proc.stdout.readline()
        assert line.startswith("unigrpo dashboard: http://127.0.0.1:"), line
        port = int(line.split()[2].rstrip("/").rsplit(":", 1)[1])
        assert request(port, "/api/runs", host=f"box.lan:{port}")[0] == 200
        assert request(port, "/api/runs", host=f"evil.example:{port}")[0] == 421
    finally:
        proc.terminate()
        proc.wait(30)


def test_with_a_token_the_token_is_the_guard(runs):
    """Today's token behaviour is kept: any Host with the token is answered, none without it."""
    with served(runs, token="s3cret") as port:
        for host in (f"127.0.0.1:{port}", "evil.example", "dashboard.example:8300"):
            assert request(port, "/api/runs", host=host)[0] == 401
            status, body = request(port, "/api/runs", host=host, headers={"Authorization": "Bearer s3cret"})
            assert status == 200 and b"demo" in body


# ---------------------------------------------------------------------- Origin (requests that could change something)
@pytest.mark.parametrize("value, name", [
    ("http://localhost:8300", "localhost"), ("https://[::1]:8300", "::1"), ("http://evil.example", "evil.example"),
    ("null", None), ("file://", None), ("http://evil@localhost", None), ("localhost", None),
])
def test_origin_name(value, name):
    assert origin_name(value) == name


def test_unsafe_requests_from_a_foreign_origin_are_refused(runs):
    with served(runs, allow_hosts=["box.lan"]) as port:
        foreign = {"Origin": "http://evil.example"}
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            status, body = request(port, "/api/runs", method=method, headers=foreign)
            assert status == 403 and b"Origin" in body and b"demo" not in body, method
            assert request(port, "/api/runs", method=method, headers={"Origin": "null"})[0] == 403
            for ok in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", "http://box.lan", None):
                headers = {"Origin": ok} if ok else {}  # allowed: on to the router, which has no such route
                assert request(port, "/api/runs", method=method, headers=headers)[0] == 405, (method, ok)
        for upgrade in ({"Upgrade": "websocket", "Connection": "Upgrade"}, {"Accept": "text/event-stream"}):
            assert request(port, "/api/runs", headers={**foreign, **upgrade})[0] == 403
        # a plain read from another origin's page is answered (the browser keeps the answer from that page)
        assert request(port, "/api/runs", headers=foreign)[0] == 200
    with served(runs, token="s3cret") as port:  # with a token the Origin check holds too; same origin is fine
        auth = {"Authorization": "Bearer s3cret"}
        assert request(port, "/api/runs", method="POST", host="dash.example:9", headers={
            **auth, "Origin": "http://evil.example"})[0] == 403
        assert request(port, "/api/runs", method="POST", host="dash.example:9", headers={
            **auth, "Origin": "http://dash.example:9"})[0] == 405


# ---------------------------------------------------------------------- malformed requests: a 400 and one log line
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_malformed_requests_get_400_and_one_log_line_per_window(runs, caplog):
    clock = Clock()
    log = QuietServerLog(server_logger, window_s=60.0, clock=clock)
    long_query = b"GET /api/runs?q=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    bad_utf8 = b"GET /api/runs?q=\xff\xfe\xc3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    with served(runs, log=log) as port:
        for _ in range(5):
            assert raw_status(port, long_query) == 400
            assert raw_status(port, bad_utf8) == 400
        lines = [r for r in caplog.records if r.name == "aiohttp.server"]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert lines[0].exc_info is None and "\n" not in lines[0].getMessage()
        assert "answered 400" in lines[0].getMessage() and lines[0].levelno == logging.WARNING
        assert len(lines[0].getMessage()) < 300
        clock.now += 61  # the next window: one line again, counting the 9 left out
        assert raw_status(port, bad_utf8) == 400
        lines = [r for r in caplog.records if r.name == "aiohttp.server"]
        assert len(lines) == 2 and "9 more" in lines[1].getMessage() and "InvalidURLError" in lines[1].getMessage()
        assert request(port, "/api/runs")[0] == 200  # the server is fine


def test_other_server_errors_keep_their_traceback(caplog):
    log = QuietServerLog(logging.getLogger("aiohttp.server"))
    try:
        raise RuntimeError("a real bug")
    except RuntimeError as exc:
        log.exception("Unhandled exception", exc_info=exc)
    assert caplog.records[-1].exc_info is not None and caplog.records[-1].levelno == logging.ERROR


# ---------------------------------------------------------------------- /api/prompt run lists
def test_prompt_runs_are_deduplicated_and_capped(runs):
    with served(runs) as port:
        status, body = request(port, "/api/prompt?prompt_id=toy-0&runs=" + ",".join(["demo"] * 1500))
        data = json.loads(body)
        assert status == 200 and [r["id"] for r in data["runs"]] == ["demo"] and len(body) < 2000
        status, body = request(port, "/api/prompt?prompt_id=toy-0&runs=" + ",".join(["other", "demo"] * 700))
        assert status == 200 and [r["id"] for r in json.loads(body)["runs"]] == ["other", "demo"]
        too_many = ",".join(f"run{i}" for i in range(MAX_COMPARE_RUNS + 1))
        status, body = request(port, f"/api/prompt?prompt_id=toy-0&runs={too_many}")
        assert status == 400 and f"at most {MAX_COMPARE_RUNS}" in json.loads(body)["error"]
        at_cap = ",".join(["demo", "other"] + [f"run{i}" for i in range(MAX_COMPARE_RUNS - 2)])
        assert request(port, f"/api/prompt?prompt_id=toy-0&runs={at_cap}")[0] == 404  # unknown ids, not the cap
