"""A Discord-like webhook server on 127.0.0.1, for testing one's own flows and the benches.

It speaks the webhook route Discord does (``POST /api/webhooks/{id}/{token}?wait=true``),
answers with Discord's rate-limit headers and 429 body, and enforces Discord's per-webhook
bucket: ``limit`` requests per ``per`` seconds (5 per 2 s by default), refilled whole when
the window that the first request opened has passed. Faults can be switched on per webhook:
``"500"``, ``"timeout"``, ``"404"`` (webhook deleted) and ``"ban"`` (a 429 with no rate-limit
headers, as Cloudflare sends), ``"429"`` (a 429 whose ``retry_after`` and ``Retry-After`` are
whatever the test sets: ``"nan"``, ``-5``, ``86400``...). ``reset_after_header`` makes every
successful answer say ``X-RateLimit-Remaining: 0`` with that ``X-RateLimit-Reset-After``.

It runs on its own event loop in a thread so that sync and async callers, in the test's loop
or in Prefect's, can all reach it.

:func:`run_storm` starts several processes (:mod:`prefect_atlas.testing.discord_storm`) that
post to one webhook of the server at the same instant, and reports what the server saw.

    server = DiscordServer().start()
    hook = server.add_webhook()
    block = DiscordBlock(alerts=SecretStr(server.url(hook)), allowed_hosts=["127.0.0.1"])
    ...
    server.stop()
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web


@dataclass
class Webhook:
    """One webhook of the server: its rate-limit window, its fault, what it received."""

    id: str
    """The webhook's id (a Discord-like snowflake)."""
    token: str
    """The webhook's token (it contains ``SeCrEtToKeN``, so leaks are easy to find)."""
    window_start: float = 0.0
    """Monotonic start of the current rate-limit window."""
    used: int = 0
    """Requests accepted in the current window."""
    fault: str | None = None
    """The fault served instead of a success (see :meth:`DiscordServer.set_fault`)."""
    fault_count: int | None = None  # None: until cleared
    """How many more requests get the fault; None: until cleared."""
    received: list[dict[str, Any]] = field(default_factory=list)
    """The message bodies stored, in order."""
    received_at: list[float] = field(default_factory=list)  # monotonic time each message was stored
    """Monotonic time each message was stored."""
    requests: int = 0
    """Every request received, faults and 429s included."""
    rate_limited: int = 0
    """429 answers given for the webhook's own limit."""
    faults_served: int = 0
    """Requests answered with the fault."""
    retry_after_body: Any = None  # the 429 fault's body "retry_after"
    """The ``retry_after`` of the ``429`` fault's body."""
    retry_after_header: str | None = None  # the 429 fault's Retry-After
    """The ``Retry-After`` header of the ``429`` fault."""
    reset_after_header: str | None = (
        None  # forced X-RateLimit-Reset-After (and Remaining 0) on success
    )
    """A forced ``X-RateLimit-Reset-After`` (with ``Remaining: 0``) on success."""


class DiscordServer:
    """The server; ``start()`` it, ``add_webhook()`` and point a block at ``url(hook)``."""

    def __init__(self, *, limit: int = 5, per: float = 2.0, hang_seconds: float = 30.0) -> None:
        self.limit = limit
        """Requests each webhook accepts per window."""
        self.per = per
        """The rate-limit window, in seconds."""
        self.hang_seconds = hang_seconds
        """How long the ``timeout`` fault holds a request before answering 500."""
        self.webhooks: dict[str, Webhook] = {}
        """The webhooks, by id."""
        self._ids = itertools.count(1_100_000_000_000_000_000)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        """The port it listens on (127.0.0.1), set by :meth:`start`."""

    # -------------------------------------------------------------- control

    def add_webhook(self) -> Webhook:
        """A new webhook on this server."""
        hook = Webhook(id=str(next(self._ids)), token=uuid.uuid4().hex + "SeCrEtToKeN")
        with self._lock:
            self.webhooks[hook.id] = hook
        return hook

    def url(self, hook: Webhook) -> str:
        """The webhook URL of ``hook``, to set on a :class:`~prefect_atlas.DiscordBlock`."""
        return f"http://127.0.0.1:{self.port}/api/webhooks/{hook.id}/{hook.token}"

    def set_fault(
        self,
        hook: Webhook,
        fault: str | None,
        count: int | None = None,
        *,
        retry_after: Any = None,
        retry_after_header: str | None = None,
    ) -> None:
        """Answer ``hook``'s next ``count`` requests (None: all) with a fault, None to clear.

        Faults: ``"500"``, ``"timeout"`` (hang, then 500), ``"404"`` (webhook deleted),
        ``"ban"`` (a 429 without rate-limit headers, as Cloudflare sends), ``"global"`` (a
        global 429) and ``"429"`` (with the given ``retry_after`` and ``Retry-After``).
        """
        assert fault in (None, "500", "timeout", "404", "ban", "global", "429")
        with self._lock:
            hook.fault, hook.fault_count = fault, count
            hook.retry_after_body, hook.retry_after_header = retry_after, retry_after_header

    def delete(self, hook: Webhook) -> None:
        """Delete ``hook``: its URL answers 404 from now on, as Discord's does."""
        with self._lock:
            self.webhooks.pop(hook.id, None)

    @property
    def total_rate_limited(self) -> int:
        """429 answers given, over every webhook."""
        return sum(h.rate_limited for h in self.webhooks.values())

    # -------------------------------------------------------------- HTTP

    async def _get_webhook(self, request: web.Request) -> web.StreamResponse:
        """Discord's "get webhook with token": the webhook object, or 404 once deleted."""
        hook_id, token = request.match_info["id"], request.match_info["token"]
        with self._lock:
            hook = self.webhooks.get(hook_id)
        if hook is None or hook.token != token or hook.fault == "404":
            return web.json_response({"message": "Unknown Webhook", "code": 10015}, status=404)
        return web.json_response(
            {"id": hook.id, "type": 1, "name": "atlas", "channel_id": "1", "token": hook.token}
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        hook_id, token = request.match_info["id"], request.match_info["token"]
        with self._lock:
            hook = self.webhooks.get(hook_id)
        if hook is None or hook.token != token:
            return web.json_response({"message": "Unknown Webhook", "code": 10015}, status=404)
        hook.requests += 1
        fault = hook.fault
        if fault is not None:
            with self._lock:
                if hook.fault_count is not None:
                    hook.fault_count -= 1
                    if hook.fault_count <= 0:
                        hook.fault, hook.fault_count = None, None
                hook.faults_served += 1
            if fault == "500":
                return web.json_response(
                    {"message": "500: Internal Server Error", "code": 0}, status=500
                )
            if fault == "timeout":
                await asyncio.sleep(self.hang_seconds)
                return web.json_response({"message": "late"}, status=500)
            if fault == "404":
                return web.json_response({"message": "Unknown Webhook", "code": 10015}, status=404)
            if fault == "ban":
                # Cloudflare's error 1015 page: HTML, no Discord headers.
                return web.Response(
                    text=(
                        "<html><title>Error 1015</title><body>You "
                        "are being rate limited</body></html>"
                    ),
                    content_type="text/html",
                    status=429,
                )
            if fault == "429":
                # A Discord-shaped 429 (bucket headers, JSON body) with the wait the test chose.
                headers = {
                    "X-RateLimit-Limit": str(self.limit),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Bucket": f"bucket-{hook.id[-6:]}",
                    "X-RateLimit-Scope": "user",
                    "X-RateLimit-Global": "false",
                }
                if hook.retry_after_header is not None:
                    headers["Retry-After"] = hook.retry_after_header
                hook.rate_limited += 1
                return web.json_response(
                    {
                        "message": "You are being rate limited.",
                        "retry_after": hook.retry_after_body,
                        "global": False,
                    },
                    status=429,
                    headers=headers,
                )
            if fault == "global":
                # Discord's global rate limit: JSON body, Retry-After and
                # X-RateLimit-Global/Scope only.
                return web.json_response(
                    {"message": "You are being rate limited.", "retry_after": 0.3, "global": True},
                    status=429,
                    headers={
                        "Retry-After": "1",
                        "X-RateLimit-Global": "true",
                        "X-RateLimit-Scope": "global",
                    },
                )

        now = time.monotonic()
        if now - hook.window_start >= self.per:
            hook.window_start, hook.used = now, 0
        reset_after = max(0.0, hook.window_start + self.per - now)
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Bucket": f"bucket-{hook.id[-6:]}",
        }
        if hook.used >= self.limit:
            hook.rate_limited += 1
            headers |= {
                "X-RateLimit-Remaining": "0",
                "Retry-After": str(max(1, round(reset_after))),
                "X-RateLimit-Scope": "shared",
                "X-RateLimit-Global": "false",
            }
            body = {
                "message": "You are being rate limited.",
                "retry_after": round(reset_after, 3),
                "global": False,
            }
            return web.json_response(body, status=429, headers=headers)
        hook.used += 1
        headers["X-RateLimit-Remaining"] = str(self.limit - hook.used)
        if hook.reset_after_header is not None:
            headers["X-RateLimit-Remaining"] = "0"
            headers["X-RateLimit-Reset-After"] = hook.reset_after_header
        payload = await request.json()
        message = {"id": str(next(self._ids)), "webhook_id": hook.id, "channel_id": "1", **payload}
        hook.received.append(message)
        hook.received_at.append(time.monotonic())
        if request.query.get("wait", "false").lower() != "true":
            return web.Response(status=204, headers=headers)
        return web.json_response(message, headers=headers)

    # -------------------------------------------------------------- lifecycle

    def start(self) -> DiscordServer:
        """Start serving in a background thread; returns the server once it listens."""
        ready = threading.Event()

        async def serve() -> None:
            app = web.Application()
            app.router.add_post(r"/api/webhooks/{id}/{token}", self._handle)
            app.router.add_get(r"/api/webhooks/{id}/{token}", self._get_webhook)
            self._runner = web.AppRunner(
                app, handle_signals=False, access_log=None, shutdown_timeout=1.0
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            ready.set()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(serve())
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="discord-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Discord test server did not start")
        return self

    def stop(self) -> None:
        """Stop the server, cancelling requests still held by a ``timeout`` fault."""
        if self._loop is not None and self._thread is not None:
            loop = self._loop

            async def shutdown() -> None:
                if self._runner is not None:
                    await self._runner.cleanup()
                    self._runner = None
                current = asyncio.current_task()
                pending = [t for t in asyncio.all_tasks() if t is not current]
                for task in pending:  # handlers still hanging on a "timeout" fault
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(15)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)


# The folder that holds the prefect_atlas package: the storm children import it from there.
ROOT = Path(__file__).resolve().parents[2]
"""The folder that holds the ``prefect_atlas`` package (the storm children's ``PYTHONPATH``)."""


@dataclass
class StormResult:
    """What the server saw of one storm (see :func:`run_storm`)."""

    processes: int
    """Child processes that sent alerts."""
    per_process: int
    """Alerts each child sent."""
    seconds: float  # first to last message the server stored
    """First to last message the server stored."""
    floor: float  # the least time the webhook's limit allows for that many messages
    """The least time the webhook's limit allows for that many messages."""
    rate_limited: int  # 429s the server answered
    """429s the server answered."""
    lost: int  # alerts never stored
    """Alerts never stored."""
    duplicates: int  # alerts stored more than once
    """Alerts stored more than once."""
    children: list[dict[str, Any]]
    """Each child's own report (JSON from its stdout)."""

    @property
    def ratio(self) -> float:
        """``seconds`` over ``floor``: 1.0 means the storm went exactly as fast as allowed."""
        return self.seconds / self.floor if self.floor else 0.0


def run_storm(
    server: DiscordServer, hook: Webhook, database_url: str | None, processes: int, per_process: int
) -> StormResult:
    """``processes`` children each send ``per_process`` alerts to ``hook`` at the same instant."""
    control = Path(tempfile.mkdtemp(prefix="atlas-storm-"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop(
        "ATLAS_ALERT_MEMORY_DATABASE", None
    )  # the budget is shared only when database_url says so
    children = [
        subprocess.Popen(  # noqa: S603 (our own interpreter and module, fixed arguments)
            [
                sys.executable,
                "-m",
                "prefect_atlas.testing.discord_storm",
                server.url(hook),
                database_url or "-",
                str(per_process),
                str(control),
                f"p{i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for i in range(processes)
    ]
    try:
        limit = time.monotonic() + 120
        while len(list(control.glob("*.ready"))) < processes:
            if time.monotonic() > limit or any(c.poll() is not None for c in children):
                raise RuntimeError(
                    "storm children did not get ready: "
                    + " | ".join(
                        (c.communicate(timeout=5)[1] or "")[-2000:]
                        for c in children
                        if c.poll() is not None
                    )
                )
            time.sleep(0.02)
        (control / "go").write_text("")
        outputs = []
        for child in children:
            out, err = child.communicate(timeout=300)
            if child.returncode != 0:
                raise RuntimeError(f"storm child failed: {err[-3000:]}")
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    total = processes * per_process
    titles = [m["embeds"][0]["title"] for m in hook.received]
    expected = {f"p{i} alert {j}" for i in range(processes) for j in range(per_process)}
    windows = -(-total // server.limit)
    stamps = hook.received_at
    return StormResult(
        processes=processes,
        per_process=per_process,
        seconds=(max(stamps) - min(stamps)) if stamps else 0.0,
        floor=(windows - 1) * server.per,
        rate_limited=hook.rate_limited,
        lost=len(expected - set(titles)),
        duplicates=len(titles) - len(set(titles)),
        children=outputs,
    )
