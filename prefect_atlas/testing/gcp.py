"""Offline Google credentials, for testing one's own flows and the benches.

:class:`TokenServer` is a tiny OAuth2 token endpoint on 127.0.0.1 that grants every request;
:func:`service_account_info` makes a service-account key (a fresh RSA key) whose
``token_uri`` is that endpoint. Together they let a :class:`~prefect_atlas.VaultBlock`
with service-account credentials run against a storage emulator without a network.

Needs only ``cryptography`` (which Prefect itself requires); the Google client libraries
that use the key come with the ``gcs`` extra.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["TokenServer", "service_account_info"]


class TokenServer:
    """A tiny OAuth2 token endpoint so that service-account credentials work offline."""

    def __init__(self) -> None:
        self.requests = 0
        """Token requests served."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner.requests += 1
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                body = json.dumps(
                    {"access_token": "local-test-token", "expires_in": 3600, "token_type": "Bearer"}
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        """The HTTP server, on 127.0.0.1 and a free port."""
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        """The thread it serves in."""
        self.thread.start()

    @property
    def url(self) -> str:
        """The endpoint's URL, the ``token_uri`` of :func:`service_account_info`."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/token"

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()


def service_account_info(token_uri: str, project: str = "atlas-test") -> dict[str, str]:
    """A service-account key with a freshly generated RSA key and a local token endpoint."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "local-key-1",
        "private_key": pem,
        "client_email": f"vault@{project}.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "auth_uri": "http://127.0.0.1/auth",
        "token_uri": token_uri,
    }
