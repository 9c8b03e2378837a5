"""A real `prefect server start` on 127.0.0.1 with its own PREFECT_HOME, and CLI helpers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrefectServer:
    """`prefect server start` in a subprocess; `env` is what its clients need."""

    def __init__(self, home: Path, extra_env: dict[str, str]) -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        # the dashboard (`/` opens the v2 UI); the UI needs PREFECT_UI_API_URL to call this port
        self.ui_url = f"http://127.0.0.1:{self.port}"
        self.home = home
        self.env = {
            **os.environ,
            **extra_env,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # no scheduled runs: the test triggers the one run it checks
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        }
        self.env.pop("PREFECT_SERVER_EPHEMERAL_ENABLED", None)
        self.log = (home / "server.log").open("w")
        self.process = subprocess.Popen(
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited: {(self.home / 'server.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("prefect server did not become healthy")

    def run(
        self, args: Sequence[str], *, cwd: Path, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            list(args),
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed "
                f"({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def spawn(self, args: Sequence[str], *, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        """A long-running client (a worker) in its own session, output to ``log``;
        :func:`stop_process` ends it and everything it started."""
        with log.open("wb") as out:
            return subprocess.Popen(
                list(args),
                cwd=cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM ``process``'s session (it and its children), then SIGKILL whatever is left
    (a stopped process too)."""
    import contextlib
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout)
