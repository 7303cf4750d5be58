"""The web page's HTTP server (aiohttp) and JSON API; a live sink of the gateway.

Routes (``docs/web.md`` is the reference):

* ``GET /``: the page (one file, vanilla JS, no CDN: works offline).
* ``GET /api/status``: the typed status document (``edge.runtime.statusdoc``), the same
  one ``edge-gateway status`` and the OPC-UA Diagnostics read; strict JSON.
* ``GET /api/tags?q=&limit=``: latest value, quality and age of the tags matching ``q``.
* ``GET /api/conditions``: the condition board (``edge.runtime.conditions``): every
  interlock, SPC and motor health condition with its alarm state.
* ``POST /api/interlocks/{name}/reset``, ``POST /api/conditions/{id}/acknowledge`` and
  ``/confirm`` (JSON body ``{"comment": ...}`` optional): through the condition board, the
  same one the CLI and OPC-UA use, with the same refusals: 409 with the reason (condition
  still active, already acknowledged, ...), 404 for an unknown name.

Invariants:

* ``publish`` only stashes values (``edge.web.tags``); requests never touch the fast path
  beyond reading the status document, and never wait for the journal or a device.
* With users configured every request needs a valid Basic login (``edge.web.auth``).
* A POST needs the ``X-Edge-Gateway`` header and, when the browser sends ``Origin``, one
  that matches the page's host: another web site open in the operator's browser cannot
  reset an interlock through it (browsers send neither across sites without CORS, which
  this server never grants).
* Without users (loopback only), a request must name a loopback host (``Host``): a web
  site that rebinds its DNS name to 127.0.0.1 cannot read or reset through the page.
* Every reset, acknowledge and confirm, taken or refused, is audited by the board: an
  ``OperatorAction`` record (origin "web", the logged-in user, or "anonymous" on a
  loopback page without users) and one log line with the peer.
"""

from __future__ import annotations

import asyncio
import importlib.resources
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlparse

import structlog
from aiohttp import web

from edge.components import BuildContext
from edge.model import Record, SampleBatch
from edge.protocols.opcua import security as sec
from edge.runtime.links import Link
from edge.runtime.statusdoc import encode
from edge.web.auth import REALM, BasicAuth, is_loopback, parse_basic
from edge.web.config import WebConfig, split_listen
from edge.web.tags import MAX_ROWS, LatestTags

log = structlog.get_logger("edge.web")

CSRF_HEADER = "X-Edge-Gateway"
_JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=encode(body), status=status, content_type=_JSON,
                        headers={"Cache-Control": "no-store"})


class WebSink:
    """The page and its API as a live sink (see the module docstring)."""

    def __init__(self, cfg: WebConfig, ctx: BuildContext,
                 users: dict[str, sec.PasswordHash]) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.name = cfg.name
        self.host, self.port = split_listen(cfg.listen)
        self.started = asyncio.Event()
        self.latest = LatestTags(ctx.tags)
        self.auth = BasicAuth(users, fail_interval_s=cfg.login_fail_interval_s) if users else None
        self._page = importlib.resources.files("edge.web").joinpath("page.html").read_bytes()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def publish(self, batch: SampleBatch, records: Sequence[Record]) -> None:
        self.latest.publish(batch)

    async def run(self) -> None:
        # The listener is a link like any other: a port in use is one "link down" line
        # and a retry with backoff, never a traceback per attempt.
        self.started.clear()
        link = self.ctx.metrics.links.open(f"sink:{self.name}")
        await link.run(lambda: self._serve(link))

    async def _serve(self, link: Link) -> None:
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            self.port = int(runner.addresses[0][1])
            link.up(url=self.url)
            log.info("web page listening", url=self.url,
                     login="required" if self.auth else "none (loopback)")
            self.started.set()
            await asyncio.Event().wait()
        finally:
            self.started.clear()
            await runner.cleanup()

    # ------------------------------------------------------------------ routes

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/", self._index)
        app.router.add_get("/api/status", self._status)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/api/conditions", self._conditions)
        app.router.add_post("/api/interlocks/{name}/reset", self._reset)
        app.router.add_post("/api/conditions/{id}/acknowledge", self._acknowledge)
        app.router.add_post("/api/conditions/{id}/confirm", self._confirm)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or "?"
        if self.auth is None and not is_loopback(urlparse(f"//{request.host}").hostname or ""):
            # No login: only a browser that asked for a loopback name gets in. A web site
            # that rebinds its own DNS name to 127.0.0.1 sends that name: refused.
            log.warning("web request refused: not a loopback Host", peer=peer,
                        host=request.host)
            return _json({"ok": False, "error": "without users, open this page as "
                          "http://127.0.0.1:PORT/ or http://localhost:PORT/"}, 403)
        if self.auth is not None:
            header = request.headers.get("Authorization")
            user = self.auth.check(header, peer)
            if user is None:
                if header:
                    log.warning("web login refused: wrong user name or password", peer=peer)
                return web.Response(
                    status=401, text="login required\n",
                    headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if CSRF_HEADER not in request.headers or (
                origin is not None and urlparse(origin).netloc != request.host
            ):
                log.warning("web request refused: not from the page", peer=peer,
                            path=request.path, origin=origin or "")
                return _json({"ok": False, "error": f"a POST needs the {CSRF_HEADER} header "
                              "and, if any, an Origin of this server"}, 403)
        return await handler(request)

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def _status(self, request: web.Request) -> web.Response:
        doc = self.ctx.hooks.status()
        if doc is None:
            return _json({"error": "the gateway has no status yet"}, 503)
        return _json(doc)

    async def _tags(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit", "200")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_ROWS:
            return _json({"error": f"limit must be a whole number from 1 to {MAX_ROWS}"}, 400)
        return _json(self.latest.search(request.query.get("q", ""), int(raw)))

    async def _conditions(self, request: web.Request) -> web.Response:
        board = self.ctx.hooks.conditions
        return _json([] if board is None else board.conditions())

    def _user(self, request: web.Request) -> str:
        # The middleware checked the login already: here only its name, for the audit.
        creds = parse_basic(request.headers.get("Authorization", "")) if self.auth else None
        return creds[0] if creds else "anonymous"

    async def _comment(self, request: web.Request) -> str:
        if not request.can_read_body:
            return ""
        try:
            body = await request.json()
        except ValueError:
            return ""
        comment = body.get("comment", "") if isinstance(body, dict) else ""
        return str(comment)[:1000]

    async def _act(self, request: web.Request, action: str, target: str) -> web.Response:
        board = self.ctx.hooks.conditions
        user, peer = self._user(request), request.remote or "?"
        if board is None:
            return _json({"ok": False, "error": "the gateway has no condition board"}, 503)
        comment = await self._comment(request)
        if action == "reset":
            out = await board.reset(target, origin="web", user=user, comment=comment)
        elif action == "acknowledge":
            out = await board.acknowledge(target, origin="web", user=user, comment=comment)
        else:
            out = await board.confirm(target, origin="web", user=user, comment=comment)
        what = "interlock reset" if action == "reset" else action
        log.warning(f"{what} from the web" + ("" if out.ok else f" refused: {out.refusal}"),
                    **{"interlock" if action == "reset" else "condition": target},
                    user=user, peer=peer, detail=out.detail)
        if out.ok:
            key = "interlock" if action == "reset" else "condition"
            return _json({"ok": True, key: target, "detail": out.detail})
        status = 404 if out.refusal == "unknown" else 502 if \
            out.refusal == "command_failed" else 409
        return _json({"ok": False, "error": out.detail, "refusal": out.refusal}, status)

    async def _reset(self, request: web.Request) -> web.Response:
        return await self._act(request, "reset", request.match_info["name"])

    async def _acknowledge(self, request: web.Request) -> web.Response:
        return await self._act(request, "acknowledge", request.match_info["id"])

    async def _confirm(self, request: web.Request) -> web.Response:
        return await self._act(request, "confirm", request.match_info["id"])
