"""A real `stagetune serve` in a subprocess, on its own port, store and local Ray."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

STAGETUNE = str(Path(sys.executable).with_name("stagetune"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, db: str, data_dir: Path, tokens: str = "", port: int | None = None,
                 ray_address: str | None = None, env: Mapping[str, str] | None = None,
                 executable: str = STAGETUNE, args: tuple[str, ...] = (),
                 cwd: Path | None = None) -> None:
        """`ray_address`: join that cluster (quicker); else the server starts its own Ray,
        which also holds its runners' weights under `data_dir`. `env`: more environment
        for the server, and so for the Ray it starts (e.g. PYTHONPATH to a plugin).
        `executable`, `args`, `cwd`: another install's `stagetune`, more options for
        `serve`, the folder it runs in."""
        self.db, self.data_dir, self.tokens = db, data_dir, tokens
        self.env = dict(env or {})
        self.ray_address = ray_address
        self.executable, self.args, self.cwd = executable, args, cwd
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / f"serve-{self.port}.log"

    def start(self, timeout: float = 90) -> Server:
        env = {**os.environ, "STAGETUNE_DATA_DIR": str(self.data_dir),
               "STAGETUNE_API_TOKENS": self.tokens, **self.env}
        env.pop("RAY_ADDRESS", None)
        if self.ray_address:
            env["RAY_ADDRESS"] = self.ray_address
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.executable, "serve", "--db", self.db, "--port", str(self.port), *self.args],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the server did not get ready: {self.log.read_text()}")

    def stop(self) -> None:
        """SIGTERM, as a supervisor would; its local Ray goes down with it."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if not self.ray_address:  # it started a Ray: let its processes finish exiting
            time.sleep(1)
