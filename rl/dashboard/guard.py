"""Who the dashboard answers: the token, the Host and Origin checks, and a quiet log for malformed requests.

A tokenless dashboard on 127.0.0.1 is reachable by any web page the user opens through DNS rebinding
(evil.example re-resolved to 127.0.0.1 makes the page same-origin with the dashboard), so without a
token only requests whose `Host` names this machine (localhost, 127.0.0.1, [::1], the bound address,
or a name given with --allow-host) are answered. A request that could change something (any method
but GET/HEAD, a websocket or event-stream upgrade) from another origin's page is refused too, with or
without a token. With a token the token is the guard: a rebinding page never has it.
"""

from __future__ import annotations

import hmac
import logging
import re
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

COOKIE = "unigrpo_dashboard_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")
SAFE_METHODS = ("GET", "HEAD")
# a Host header value (or an Origin's host part): a name or IPv4 address, or an [IPv6] literal, and a port
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?")
_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<host>[^/?#@\s]+)")


def allowed_names(bound: str, extra=()) -> frozenset[str]:
    """The names a tokenless dashboard answers to: loopback, the address it is bound to (not a
    wildcard such as 0.0.0.0, which names no host), and each --allow-host NAME."""
    names = set(LOOPBACK_NAMES) | {n.strip("[]").lower() for n in extra if n.strip("[]")}
    if bound.strip("[]") not in WILDCARDS:
        names.add(bound.strip("[]").lower())
    return frozenset(names)


def host_name(value: str) -> str | None:
    """The host name of a `Host` header value (`localhost:8300`, `[::1]:8300`, `127.0.0.1`), lower case,
    without port or brackets; None for anything else (user info, paths, spaces: never a real host)."""
    m = _HOST.fullmatch(value.strip())
    if m is None:
        return None
    return (m.group("v6") or m.group("name")).lower()


def origin_name(value: str) -> str | None:
    """The host name of an `Origin` header (`http://localhost:8300`); None for `null` or anything else."""
    m = _ORIGIN.fullmatch(value.strip())
    return host_name(m.group("host")) if m else None


def _refuse(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=f"{status}: {reason}\n")


def host_middleware(names: frozenset[str]):
    """Without a token: answer only requests whose Host is one of `names` (421 otherwise), so a page
    that rebinds its own name to 127.0.0.1 gets a refusal, never the data."""
    shown = ", ".join(sorted(f"[{n}]" if ":" in n else n for n in names))

    @web.middleware
    async def check(request: web.Request, handler):
        if host_name(request.headers.get("Host", "")) not in names:
            return _refuse(421, f"this dashboard answers only to {shown} in the Host header "
                                "(pass --allow-host NAME to add a name, or --token)")
        return await handler(request)

    return check


def _could_change_something(request: web.Request) -> bool:
    """Anything but a plain read: another method, or a websocket / event-stream upgrade."""
    return (request.method not in SAFE_METHODS or "Upgrade" in request.headers
            or "text/event-stream" in request.headers.get("Accept", ""))


def origin_middleware(names: frozenset[str]):
    """Refuse (403) a request that could change something when a page of another origin sent it:
    its Origin must be one of `names` or the request's own Host. No Origin (curl, scripts) is fine."""

    @web.middleware
    async def check(request: web.Request, handler):
        origin = request.headers.get("Origin")
        if origin is not None and _could_change_something(request):
            name = origin_name(origin)
            if name is None or (name not in names and name != host_name(request.headers.get("Host", ""))):
                return _refuse(403, "a request from another site's page is refused (Origin is not an allowed host)")
        return await handler(request)

    return check


def auth_middleware(token: str | None):
    """With a token: every request needs it (`?token=`, then the cookie the first page load sets, or
    `Authorization: Bearer`); 401 otherwise."""

    @web.middleware
    async def check(request: web.Request, handler):
        if token is None:
            return await handler(request)
        given = request.query.get("token") or request.cookies.get(COOKIE) or ""
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            given = bearer[7:]
        if not hmac.compare_digest(given.encode(), token.encode()):
            return web.Response(status=401, text="401: this dashboard needs its token: open the URL that "
                                "`unigrpo dashboard` printed (it ends with ?token=...)\n")
        response = await handler(request)
        if request.query.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return response

    return check


def middlewares(token: str | None, names: frozenset[str]) -> list:
    """In order: the Host check (only without a token), the Origin check, the token."""
    return ([host_middleware(names)] if token is None else []) + [origin_middleware(names), auth_middleware(token)]


class QuietServerLog(logging.LoggerAdapter):
    """aiohttp's server log, where a request too malformed to parse (a 100 KB URL, bytes that are not
    UTF-8) is one line, at most one per `window_s`, and the next line counts those left out. aiohttp
    answers such a request 400 itself and would log a full traceback for each: any client could fill
    the log. Everything else (a real bug) is logged as aiohttp logs it."""

    def __init__(self, logger: logging.Logger, window_s: float = 60.0, clock=time.monotonic) -> None:
        super().__init__(logger, {})
        self.window_s = window_s
        self.clock = clock
        self._next_at = float("-inf")
        self._left_out = 0

    def exception(self, msg, *args, exc_info=True, **kwargs) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._malformed(exc_info, args[0] if args else "?")
        else:
            self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)

    def _malformed(self, exc: HttpProcessingError, remote) -> None:
        now = self.clock()
        if now < self._next_at:
            self._left_out += 1
            return
        first = (str(exc.message).strip().splitlines() or [""])[0][:120]
        more = f" (and {self._left_out} more since the last such line, not logged)" if self._left_out else ""
        self.logger.warning("unigrpo dashboard: malformed request from %s answered %s: %s: %s%s",
                            remote, exc.code, type(exc).__name__, first, more)
        self._next_at = now + self.window_s
        self._left_out = 0
