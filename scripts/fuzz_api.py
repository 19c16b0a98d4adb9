"""Fuzz the REST API with schemathesis, every check on, against a real `stagetune serve`.

Three runs, each on a fresh server (SQLite store, its own local Ray, a temporary data
folder): a server without tokens; a server with STAGETUNE_API_TOKENS, called with a valid
token; and the same server called without one (every answer must be a documented 401).
The goal is zero server errors and zero schema violations. Prints each run's summary and
exits non-zero when any run fails.

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
# Every check stays on. The submit body is documented as "an object": which objects are
# runnable specs (registered names, knob ranges, conditions) is more than JSON Schema says,
# so a schema-valid object may get the 422 that names its problem.
CONFIG = """
[[operations]]
include-path = "/api/studies"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""


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

    def __exit__(self, *_: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def fuzz(server: Serve, label: str, args: argparse.Namespace, token: str | None) -> bool:
    """One schemathesis run; prints its summary and returns whether it passed."""
    config = server.folder / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [str(BIN / "st"), "--config-file", str(config), "run",
               f"{server.url}/openapi.json", "--checks", "all",
               "--max-examples", str(args.max_examples), "--workers", str(args.workers),
               "--seed", str(args.seed), "--request-timeout", "60", "--no-color",
               "--warnings", "off", *args.extra]
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
