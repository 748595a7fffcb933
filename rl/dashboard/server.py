"""`unigrpo dashboard RUN_DIR [RUN_DIR ...]`: a read-only, live web view of runs (aiohttp).

    unigrpo dashboard runs/tiny                 one run
    unigrpo dashboard runs/a runs/b             several runs, overlaid on the compare page
    unigrpo dashboard runs/                     every run under a folder, picked in the page
    unigrpo dashboard runs/ --host 0.0.0.0      reachable from other machines: needs a token
    unigrpo dashboard runs/ --allow-host box    tokenless, also answering to Host `box` (a proxy, the machine's name)

The page is one static app (rl/dashboard/static, no CDN, no download) that talks to a JSON API; each
view has its own URL so a link can be pasted into a chat. A background task re-reads every run once a
second (only what was appended, see series.py / rollouts.py), so a running job shows up live.

Safety (guard.py): binds 127.0.0.1 unless told otherwise; with --host other than loopback a token is
required (given, or generated and printed) and every request without it gets 401; without a token only a
loopback (or --allow-host) Host is answered, against DNS rebinding; URLs name runs by id, never
by path, so `../` or absolute paths answer 404; the page renders untrusted text only as text (and a
Content-Security-Policy forbids inline script); a broken run answers a message, never a 500.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import math
import secrets
import socket
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

from aiohttp import web
from aiohttp.log import server_logger

from rl.dashboard import flags, token_traces
from rl.dashboard.guard import LOOPBACK_NAMES, QuietServerLog, allowed_names, middlewares
from rl.dashboard.histograms import BINS, histogram
from rl.dashboard.rollouts import RANGE_OPS, RANGES, QueryError
from rl.dashboard.runs import RunRegistry
from rl.dashboard.series import MAX_POINTS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8300
REFRESH_S = 1.0
STATIC = ("index.html", "app.js", "charts.js", "tokens.js", "histograms.js", "timeline.js", "style.css")
PAGES = ("rollouts", "group", "replay", "images", "failures", "histograms")
MAX_TIMELINE_STEPS = 64  # steps one /api/run/<id>/timeline request may ask for
MAX_COMPARE_RUNS = 16  # runs one /api/prompt request may name (after dropping repeats); more is a 400
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
TYPES = {".html": "text/html", ".js": "application/javascript", ".css": "text/css"}


def _static(name: str) -> bytes:
    return resources.files("rl.dashboard").joinpath("static", name).read_bytes()


# ---------------------------------------------------------------------- middlewares
@web.middleware
async def errors_middleware(request: web.Request, handler):
    """Data problems become a JSON message the page shows; nothing becomes a 500."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status == 404:
            response = web.Response(status=404, text="404: not found\n")
        else:
            raise
    except QueryError as exc:
        response = web.json_response({"error": str(exc)}, status=422)
    except (ValueError, TypeError) as exc:
        response = web.json_response({"error": f"bad request: {exc}"}, status=400)
    except Exception as exc:  # noqa: BLE001 - a bug must not take the page down; it is logged
        traceback.print_exc()
        response = web.json_response({"error": f"the dashboard could not answer: {type(exc).__name__}: {exc}"},
                                     status=422)
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------------- app
def _int(q, name, default=None):
    v = q.get(name, "")
    if v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"{name}={v!r} is not an integer") from None


def _float(q, name):
    v = q.get(name, "")
    if v == "":
        return None
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"{name}={v!r} is not a finite number")
    return x


def _filters(q) -> dict:
    return {
        "step_min": _int(q, "step_min"), "step_max": _int(q, "step_max"), "task": q.get("task") or None,
        "status": q.get("status") or None, "q": q.get("q") or None, "before_step": _int(q, "before_step"),
        "prompt_id": q.get("prompt_id") or None, "version": _int(q, "version"),
        "worker": q.get("worker") or None, "flag": q.get("flag") or None, "component": q.get("component") or None,
        **{f"{name}_{op}": _float(q, f"{name}_{op}") for name in RANGES for op in RANGE_OPS},
    }


def _json(data) -> web.Response:
    return web.Response(text=json.dumps(data, allow_nan=False, default=str), content_type="application/json")


def _run_ids(q) -> list[str]:
    """`runs=a,b` once each, in the order given: a URL fits ~1,500 repeats of one id, and each repeat
    would be answered in full (up to seconds and most of a megabyte); more than MAX_COMPARE_RUNS is a 400."""
    ids = list(dict.fromkeys(i for i in q.get("runs", "").split(",") if i))
    if len(ids) > MAX_COMPARE_RUNS:
        raise ValueError(f"runs= names {len(ids)} runs; at most {MAX_COMPARE_RUNS} can be compared at once")
    return ids


def build_app(registry: RunRegistry, token: str | None = None, refresh_s: float = REFRESH_S,
              hosts: frozenset[str] = frozenset(LOOPBACK_NAMES)) -> web.Application:
    """The app; without a token it answers only requests whose Host is in `hosts` (guard.py)."""
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dashboard-query")
    app = web.Application(middlewares=[errors_middleware, *middlewares(token, hosts)])

    async def blocking(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def run_of(request: web.Request):
        run = registry.get(request.match_info["run_id"])
        if run is None:
            raise web.HTTPNotFound()
        return run

    # -- pages: one app, its view chosen from the URL
    async def page(request: web.Request):
        if "run_id" in request.match_info:
            run_of(request)
        return web.Response(body=_static("index.html"), content_type="text/html")

    async def static(request: web.Request):
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_static(name), content_type=TYPES[Path(name).suffix])

    # -- API
    async def api_runs(request):
        def work():
            return {
                "runs": [{"id": r.id, "name": r.path.name, "last_step": r.metrics.last().get("step"),
                          "rollouts": len(r.rollouts.snap.table), "reward": r.metrics.last().get("reward/mean"),
                          "problems": len(r.metrics.problems) + len(r.rollouts.problems())}
                         for r in registry.runs.values()],
                "explicit": [r.id for r in registry.explicit],
                "folders": [str(p) for p in registry.paths if p not in {r.path for r in registry.explicit}],
            }
        return _json(await blocking(work))

    async def api_info(request):
        run = run_of(request)
        return _json(await blocking(run.info))

    metrics_cache: dict[str, tuple[tuple, web.Response]] = {}

    async def api_metrics(request):
        """The overview's series; the encoded answer is kept until the run logs a step or stores one."""
        run = run_of(request)
        q = request.query
        keys = q.get("keys")
        key = (run.metrics.epoch, len(run.metrics.steps), run.rollouts.version, keys, q.get("since"), q.get("epoch"))
        hit = metrics_cache.get(run.id)
        if hit is not None and hit[0] == key:
            return web.Response(body=hit[1], content_type="application/json")

        def work():
            data = run.metrics.snapshot(keys=keys.split(",") if keys else None, since=_int(q, "since", 0),
                                        epoch=_int(q, "epoch"))
            data["rollout_steps"] = run.rollouts.step_stats(MAX_POINTS) if not data["append"] else []
            return json.dumps(data, allow_nan=False, default=str).encode()
        body = await blocking(work)
        metrics_cache[run.id] = (key, body)
        return web.Response(body=body, content_type="application/json")

    async def api_rollouts(request):
        run = run_of(request)
        q = request.query
        sort = q.get("sort", "step")
        desc = q.get("order", "desc") != "asc"
        data = await blocking(run.rollouts.rollouts, _filters(q), sort, desc, _int(q, "offset", 0), _int(q, "limit", 50))
        return _json(data)

    async def api_group(request):
        run = run_of(request)
        q = request.query
        def work():
            g = run.rollouts.group(_int(q, "step"), _int(q, "group"))
            for r in g["responses"]:  # the token diff's text (the run's tokenizer; `#id` without one)
                r["token_text"] = run.token_text(r["ids"])
            return g
        return _json(await blocking(work))

    async def api_replay(request):
        run = run_of(request)
        q = request.query

        def work():
            t = run.rollouts.trajectory(_int(q, "step"), _int(q, "group"), _int(q, "gi", 0))
            t["tokens"] = run.token_text(t["response_ids"])
            return t
        return _json(await blocking(work))

    async def api_image(request):
        run = run_of(request)
        q = request.query
        data = await blocking(run.rollouts.image_png, _int(q, "step"), _int(q, "group"), _int(q, "gi", 0))
        return web.Response(body=data, content_type="image/png")

    async def api_images(request):
        run = run_of(request)
        q = request.query
        return _json(await blocking(run.rollouts.images, _filters(q), _int(q, "offset", 0), _int(q, "limit", 48)))

    async def api_failures(request):
        run = run_of(request)
        q = request.query
        return _json(await blocking(run.rollouts.failures, _filters(q), _int(q, "offset", 0), _int(q, "limit", 50)))

    async def api_flags(request):
        """Garbled-output flags per step (rl/dashboard/flags.py)."""
        run = run_of(request)
        return _json({"steps": await blocking(flags.per_step, run.path)})

    summaries = token_traces.TraceSummaries()

    async def api_traces(request):
        """One rollout's token traces (rl/dashboard/token_traces.py), for the replay page's overlay."""
        run = run_of(request)
        q = request.query
        step, group = _int(q, "step"), _int(q, "group")
        if step is None or group is None:
            raise ValueError("traces needs step= and group=")
        return _json(await blocking(token_traces.rollout, run.path, step, group, _int(q, "gi", 0)))

    async def api_mismatch(request):
        """Per step: |learner - sampler log-prob| of traced tokens, entropy, clip fraction."""
        run = run_of(request)
        return _json(await blocking(summaries.mismatch, run.path))

    async def api_timeline(request):
        """When each phase of the last `count` steps (up to step=) ran: the span/* rows (rl/step_report.py)."""
        run = run_of(request)
        q = request.query
        count = min(_int(q, "count", 8), MAX_TIMELINE_STEPS)
        return _json(await blocking(run.metrics.window, ("span/", "time/step_s", "time/unix"), _int(q, "step"), count))

    async def api_histogram(request):
        """Counts per bin of field= (reward, value with component=, advantage, length, ...) over the
        rollouts the filters keep, each bin with its rollouts filter (rl/dashboard/histograms.py)."""
        run = run_of(request)
        q = request.query
        return _json(await blocking(histogram, run.rollouts, _filters(q), q.get("field", "reward"),
                                    _int(q, "bins", BINS), q.get("by") or None))

    async def api_prompt(request):
        """One prompt's groups in every run asked for (`runs=a,b`), for the compare page."""
        q = request.query
        prompt_id = q.get("prompt_id", "")
        runs = [registry.get(i) for i in _run_ids(q)]
        if any(r is None for r in runs):
            raise web.HTTPNotFound()

        def work():
            return {"prompt_id": prompt_id, "runs": [{"id": r.id, "groups": r.rollouts.prompt_groups(prompt_id)}
                                                     for r in runs]}
        return _json(await blocking(work))

    app.router.add_get("/", page)
    app.router.add_get("/compare", page)
    app.router.add_get("/run/{run_id}", page)
    for name in PAGES:
        app.router.add_get(f"/run/{{run_id}}/{name}", page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/favicon.ico", lambda request: web.Response(status=204))
    app.router.add_get("/api/runs", api_runs)
    app.router.add_get("/api/prompt", api_prompt)
    for name, handler in (("info", api_info), ("metrics", api_metrics), ("rollouts", api_rollouts),
                          ("group", api_group), ("replay", api_replay), ("image", api_image),
                          ("images", api_images), ("failures", api_failures), ("flags", api_flags),
                          ("traces", api_traces), ("mismatch", api_mismatch), ("timeline", api_timeline)):
        app.router.add_get(f"/api/run/{{run_id}}/{name}", handler)
    app.router.add_get("/api/run/{run_id}/histogram", api_histogram)

    async def refresher(app):
        async def loop():
            while True:
                pending = False
                try:
                    pending = await blocking(_refresh_all, registry)
                except Exception:  # noqa: BLE001 - keep serving whatever was read
                    traceback.print_exc()
                await asyncio.sleep(0.01 if pending else refresh_s)
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        pool.shutdown(wait=False, cancel_futures=True)

    app.cleanup_ctx.append(refresher)
    return app


def _refresh_all(registry: RunRegistry) -> bool:
    """Read what every run appended; True while a large store is still being indexed (in slices, so
    requests are answered from what is indexed so far)."""
    registry.scan()
    pending = False
    for run in list(registry.runs.values()):
        run.refresh(budget_s=0.5)
        pending |= run.rollouts.pending > 0
    return pending


# ---------------------------------------------------------------------- serving
def bind(host: str, port: int, try_next: int = 0) -> socket.socket:
    """A listening socket on host:port; with try_next, the next free ports when this one is taken."""
    last = None
    for p in range(port, port + try_next + 1):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, p))
            sock.listen(128)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno != errno.EADDRINUSE:
                break
    raise OSError(f"cannot listen on {host}:{port}: {last.strerror if last else 'unknown'} (pass --port)")


def url_for(host: str, port: int, token: str | None) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


async def serve(registry: RunRegistry, sock: socket.socket, token: str | None, ready=None,
                allow_hosts=(), log: logging.LoggerAdapter | None = None) -> None:
    """Serve until cancelled; without a token, Host may be loopback, the bound address or `allow_hosts`."""
    app = build_app(registry, token, hosts=allowed_names(sock.getsockname()[0], allow_hosts))
    runner = web.AppRunner(app, access_log=None, logger=log or QuietServerLog(server_logger))
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    if ready is not None:
        ready()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unigrpo dashboard",
        description="A live, read-only web view of UniGRPO runs: curves, rollouts, groups, denoising replay.",
        epilog="examples:\n  unigrpo dashboard runs/tiny\n  unigrpo dashboard runs/a runs/b\n  unigrpo dashboard runs/"
               "\n  unigrpo dashboard runs/ --host 0.0.0.0   (prints a token; every request needs it)"
               "\n  unigrpo dashboard runs/ --allow-host box  (tokenless; also answer to http://box:PORT/)"
               "\n\nWithout a token only requests whose Host is localhost, 127.0.0.1, [::1], the bound address"
               "\nor an --allow-host name are answered (421 otherwise): a web page that rebinds its own name"
               "\nto 127.0.0.1 cannot read the dashboard.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="RUN_DIR", help="run directories, or folders of runs")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=None, help=f"port (default {DEFAULT_PORT}, or the next free one; 0 = any)")
    p.add_argument("--token", default=None, help="require this token (a URL ?token=, a cookie or a Bearer header)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="without a token, also answer requests whose Host is NAME (a reverse proxy's or this machine's "
                        "name; repeatable); by default only localhost, 127.0.0.1, [::1] and the bound address")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    token = args.token
    if args.host not in LOOPBACK_NAMES and not token:
        token = secrets.token_urlsafe(18)
        print(f"unigrpo dashboard: --host {args.host} is reachable from other machines: generated a token "
              f"(pass --token to choose one): {token}", flush=True)
    paths = [Path(p) for p in args.paths]
    missing_parent = [p for p in paths if not p.exists() and not p.parent.exists()]
    if missing_parent:
        print(f"unigrpo dashboard: {missing_parent[0]}: no such directory", file=sys.stderr)
        return 2
    try:
        sock = bind(args.host, DEFAULT_PORT if args.port is None else args.port, 20 if args.port is None else 0)
    except OSError as exc:
        print(f"unigrpo dashboard: {exc}", file=sys.stderr)
        return 2
    registry = RunRegistry(paths)
    url = url_for(args.host, sock.getsockname()[1], token)
    names = ", ".join(r.id for r in registry.runs.values()) or "none yet"
    try:
        asyncio.run(serve(registry, sock, token, allow_hosts=args.allow_host, ready=lambda: print(
            f"unigrpo dashboard: {url}  (runs: {names}; Ctrl-C to stop)", flush=True)))
    except KeyboardInterrupt:
        pass
    return 0


class Background:
    """`unigrpo train ... run.dashboard=true`: the dashboard as a child process for the length of the run."""

    def __init__(self, run_dir: Path, port: int | None = None, timeout_s: float = 60.0) -> None:
        import subprocess

        cmd = [sys.executable, "-m", "rl.cli", "dashboard", str(run_dir)]
        if port is not None:
            cmd += ["--port", str(port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.url = None
        line = self.proc.stdout.readline()  # the server prints its URL once it listens, then nothing
        if line.startswith("unigrpo dashboard: http"):
            self.url = line.split()[2]
        else:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:  # noqa: BLE001
                self.proc.kill()
