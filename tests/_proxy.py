"""A loopback TCP proxy in front of PostgreSQL that can refuse or silently black-hole traffic.

The fault injector of the trust tests: ``refuse()`` is an outage (the listener and every
connection closed: clients get "connection refused"), ``blackhole()`` a silent partition
(sockets stay open, nothing is forwarded either way, nothing is answered), ``heal()`` the
network coming back. The upstream is a host and port, or the unix socket of an embedded
pgserver (which listens on no TCP port).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class TcpProxy:
    def __init__(self, upstream_conninfo: str) -> None:
        params = conninfo_to_dict(upstream_conninfo)
        host = str(params.get("host") or "127.0.0.1")
        port = int(params.get("port") or 5432)
        self._upstream: str | tuple[str, int] = (
            str(Path(host) / f".s.PGSQL.{port}") if host.startswith("/") else (host, port)
        )
        self._params = {k: v for k, v in params.items() if k not in ("host", "port", "hostaddr")}
        self.mode = "forward"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = 0
        self._stopped = False
        self._listen()

    # ------------------------------------------------------------------ control

    @property
    def url(self) -> str:
        """The upstream's conninfo, pointed at the proxy."""
        return make_conninfo("", **self._params, host="127.0.0.1", port=str(self.port))

    def refuse(self) -> None:
        """An outage: close the listener and every connection; new connects are refused."""
        with self._lock:
            self.mode = "refuse"
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def blackhole(self) -> None:
        """A silent partition: keep every socket open (and accept new ones), forward nothing."""
        with self._lock:
            self.mode = "blackhole"
        if self._listener is None:
            self._listen()

    def heal(self) -> None:
        """Forward again. Connections that lived through the black hole are reset (bytes were
        dropped mid-protocol, so they cannot be used again); new ones work."""
        with self._lock:
            was_blackholed = self.mode == "blackhole"
            conns, self._conns = (self._conns, []) if was_blackholed else ([], self._conns)
            self.mode = "forward"
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self._stopped = True
        self.refuse()

    # ------------------------------------------------------------------ plumbing

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by refuse()
            with self._lock:
                if self.mode == "refuse":
                    client.close()
                    continue
                blackholed = self.mode == "blackhole"
                self._conns.append(client)
            if blackholed:
                continue  # held open, never answered
            try:
                if isinstance(self._upstream, str):
                    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                else:
                    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                server.connect(self._upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.append(server)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: server, server: client}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                if self._stopped:
                    return
                for sock in readable:
                    if self.mode == "blackhole":
                        # Read and drop: the sender sees its bytes leave, nothing comes back.
                        if not sock.recv(65536):
                            return
                        continue
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.close()
