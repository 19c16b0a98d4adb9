"""Fuzz the REST API with schemathesis, every check on, against a real `stagetune serve`.

Three runs, each on a fresh server (SQLite store, its own local Ray, a temporary data
folder): a server without tokens; a server with STAGETUNE_API_TOKENS, called with a valid
token; and the same server called without one (every answer must be a documented 401).
Each server first runs a small digits study to its end, which the operations on one study
mostly read (so trials, figures, the report and the weights are reached, not only 404s),
and holds a cancelled study that DELETE may remove. The goal is zero server errors, zero
schema violations, and no schema-valid request refused for a rule the schema could state
(fuzz_api.toml names those it cannot). Prints each run's summary, with schemathesis'
warnings, and exits non-zero when any run fails.

    .venv/bin/python scripts/fuzz_api.py --max-examples 200 --workers 1
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
TOKEN = "fuzz-token-1"
SEED, GONE = "fuzz-seed", "fuzz-gone"  # the studies fuzz_api.toml names
# Every check on; which statuses a schema-valid request may get where JSON Schema cannot
# say the rule, and which studies the operations on one study are fuzzed against
CONFIG = Path(__file__).with_suffix(".toml")
# A study that reaches its end in a minute or so on 2 CPUs, with a winner's weights
SEED_SPEC = {
    "name": SEED, "task": {"dataset": "digits", "model": "convnet"},
    "space": {"lr": {"type": "float", "low": 3e-3, "high": 3e-2, "log": True},
              "width": {"type": "int", "low": 8, "high": 16}},
    "stages": {"overfit": {"enabled": False}, "lr_probe": {"enabled": False},
               "coarse": {"trials": 3, "epochs": 1},
               "refine": {"trials": 2, "epochs": 1, "warm_start": 1},
               "confirm": {"top": 1, "seeds": 1, "epochs": 1}},
    "resources": {"max_concurrent": 2}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """`stagetune serve` in its own process group, stopped with SIGTERM like a supervisor."""

    def __init__(self, folder: Path, tokens: str) -> None:
        self.folder, self.tokens, self.port = folder, tokens, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "serve.log"

    def __enter__(self) -> Serve:
        env = {**os.environ, "STAGETUNE_DATA_DIR": str(self.folder / "data"),
               "STAGETUNE_API_TOKENS": self.tokens}
        env.pop("RAY_ADDRESS", None)
        self.process = subprocess.Popen(
            [str(BIN / "stagetune"), "serve", "--db", f"sqlite:///{self.folder / 'store.db'}",
             "--port", str(self.port)], stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            env=env, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=3).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"the server did not get ready: {self.log.read_text()[-3000:]}")

    def seed(self) -> None:
        """The finished study the fuzzing reads, and a cancelled one it may delete."""
        headers = {"Authorization": f"Bearer {TOKEN}"} if self.tokens else {}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as api:
            api.post("/api/studies", json=SEED_SPEC).raise_for_status()
            self._wait(api, SEED, ("completed",), 600)
            api.post("/api/studies", json={**SEED_SPEC, "name": GONE}).raise_for_status()
            api.post(f"/api/studies/{GONE}/cancel").raise_for_status()
            self._wait(api, GONE, ("cancelled",), 120)

    def _wait(self, api: httpx.Client, study: str, statuses: tuple[str, ...],
              timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = api.get(f"/api/studies/{study}").json()
            if status["status"] in statuses:
                return
            if status["status"] in ("failed", "stopped", "cancelled"):
                break
            time.sleep(1)
        raise SystemExit(f"study {study} did not become {' or '.join(statuses)}: {status}")

    def __exit__(self, *_: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def fuzz(server: Serve, label: str, args: argparse.Namespace, token: str | None) -> bool:
    """One schemathesis run; prints its summary and returns whether it passed."""
    command = [str(BIN / "st"), "--config-file", str(CONFIG), "run",
               f"{server.url}/openapi.json", "--checks", "all",
               "--max-examples", str(args.max_examples), "--workers", str(args.workers),
               "--seed", str(args.seed), "--request-timeout", "60", "--no-color",
               *args.extra]
    if token is not None:
        command += ["--header", f"Authorization: Bearer {token}"]
    started = time.monotonic()
    out = subprocess.run(command, capture_output=True, text=True, cwd=server.folder)
    report = out.stdout + out.stderr
    (server.folder / f"{label}.txt").write_text(report)
    print(f"== {label}: exit {out.returncode} in {time.monotonic() - started:.0f} s ==")
    if out.returncode != 0:
        print(_failures(report))
    print(report[report.rfind("SUMMARY"):].strip() if "SUMMARY" in report else report[-4000:])
    errors = [line for line in server.log.read_text().splitlines()
              if re.search(r"Traceback|ERROR|Exception in ASGI", line)]
    if errors:
        print(f"the server logged {len(errors)} error lines, first: {errors[:5]}")
    return out.returncode == 0 and not errors


def _failures(report: str) -> str:
    """The first failures and errors, up to the summary."""
    starts = [i for i in (report.find("FAILURES"), report.find("ERRORS")) if i >= 0]
    start, end = (min(starts) if starts else 0), report.rfind("SUMMARY")
    return report[start:end if end > start else None][:12000]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=200)
    # one: CPython 3.11 races when threads parse Python sources at once (hypothesis does,
    # describing strategies): "AST constructor recursion depth mismatch"
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--keep", action="store_true", help="keep the servers' folders")
    parser.add_argument("extra", nargs="*", help="more `st run` options, after --")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="fuzz-api-") as tmp:
        root = Path(tmp)
        runs: list[tuple[str, str, list[str | None]]] = [("open", "", [None]),
                                                         ("tokens", TOKEN, [TOKEN, None])]
        for label, tokens, tries in runs:
            folder = root / label
            folder.mkdir()
            with Serve(folder, tokens) as server:
                started = time.monotonic()
                server.seed()
                print(f"== {label}: seeded in {time.monotonic() - started:.0f} s ==")
                for token in tries:
                    name = label if tokens == "" else \
                        f"{label}-{'with' if token else 'without'}-token"
                    ok &= fuzz(server, name, args, token)
        if args.keep:
            kept = Path(tempfile.mkdtemp(prefix="fuzz-api-kept-"))
            subprocess.run(["cp", "-r", f"{root}/.", str(kept)], check=False)
            print(f"reports and server logs kept in {kept}")
    print("PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
