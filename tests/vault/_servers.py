"""Background servers for the vault tests, each on 127.0.0.1 in its own thread.

Running them off the test's event loop lets module-scoped servers serve function-scoped
loops and the sync faces (which run on Prefect's own loop thread). ``TokenServer`` and
``service_account_info`` live in :mod:`prefect_atlas.testing.gcp`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import urllib.parse
from collections.abc import Callable, Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from prefect_atlas.testing.gcp import TokenServer, service_account_info

__all__ = ["GcsPreconditionProxy", "LoopThread", "TokenServer", "service_account_info"]

T = TypeVar("T")


class LoopThread:
    """An event loop in a daemon thread, for aiohttp servers shared across tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="vault-test-loop"
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class GcsPreconditionProxy:
    """An HTTP proxy in front of ``gcp-storage-emulator`` that enforces ``ifGenerationMatch`` on
    downloads.

    The emulator ignores preconditions; real GCS answers 412 when the object's generation is
    no longer the one asked for. ``before_next_download`` (a callable) runs once just before
    the next conditional download is checked: a test overwrites the object there to stage
    the race "metadata read, then the object replaced, then the pinned download". The
    upload and lookup knobs below stage lost answers and failed checks for ``store_batch``.
    """

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.before_next_download: Callable[[], None] | None = None
        self.precondition_failures = 0
        # Upload faults: forward the next N uploads but answer 503 (the object lands, the
        # answer is lost); or answer 503 without forwarding (nothing lands).
        self.lose_next_upload_answers = 0
        self.refuse_next_uploads = 0
        # Answer 503 to every object metadata lookup (a check after a failure cannot succeed).
        self.fail_object_lookups = False
        # (method, path with query) of every request that reached the proxy.
        self.requests: list[tuple[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                owner.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length) if length else None
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                unavailable = json.dumps(
                    {"error": {"code": 503, "message": "Service Unavailable (injected)"}}
                ).encode()
                if self.command == "POST" and url.path.startswith("/upload/"):
                    if owner.refuse_next_uploads > 0:
                        owner.refuse_next_uploads -= 1
                        self._reply(503, {"Content-Type": "application/json"}, unavailable)
                        return
                    if owner.lose_next_upload_answers > 0:
                        owner.lose_next_upload_answers -= 1
                        owner._request(self.command, self.path, body, dict(self.headers))
                        self._reply(503, {"Content-Type": "application/json"}, unavailable)
                        return
                if (
                    owner.fail_object_lookups
                    and self.command == "GET"
                    and "/o/" in url.path
                    and query.get("alt") != ["media"]
                ):
                    self._reply(503, {"Content-Type": "application/json"}, unavailable)
                    return
                if (
                    self.command == "GET"
                    and query.get("alt") == ["media"]
                    and "ifGenerationMatch" in query
                ):
                    hook, owner.before_next_download = owner.before_next_download, None
                    if hook is not None:
                        hook()
                    current = owner._generation(url.path)
                    if current is not None and current != query["ifGenerationMatch"][0]:
                        owner.precondition_failures += 1
                        self._reply(
                            412,
                            {"Content-Type": "application/json"},
                            json.dumps(
                                {
                                    "error": {
                                        "code": 412,
                                        "message": (
                                            "At least one of the pre-conditions "
                                            "you specified did not hold."
                                        ),
                                    }
                                }
                            ).encode(),
                        )
                        return
                status, headers, data = owner._request(
                    self.command, self.path, body, dict(self.headers)
                )
                self._reply(status, headers, data)

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def _generation(self, path: str) -> str | None:
        # .../b/{bucket}/o/{object} (JSON API or download URL): ask the emulator for the metadata.
        tail = path.split("/storage/v1/", 1)[1]
        status, _, data = self._request("GET", f"/storage/v1/{tail}", None, {})
        if status != 200:
            return None
        generation: str = json.loads(data)["generation"]
        return generation

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
