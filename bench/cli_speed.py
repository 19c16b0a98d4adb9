"""How quickly the command line answers: wall time and peak resident memory of `stagetune
validate`, `submit`, `status`, `trials` and `best` against a running service, each run
`--runs` times (median reported). Goal: at most 1 s each where no torch is installed
(`pip install stagetune`, a client-only install), and no torch loaded by the commands that
only talk to a service.

A real `stagetune serve` (SQLite in a temporary folder, its own local Ray) holds one finished
study of 200 trials, built through the store and Optuna as bench/api_load.py does; `status`,
`trials` and `best` read it. Each `submit` sends a new study, cancelled (untimed) before the
next run, so no training competes with the timings. Each command is a fresh process, as a
user runs it; its peak RSS comes from wait4(2).

`validate` is measured twice: at the service (STAGETUNE_URL set: the service's workers'-code
child, already warm, runs the checks) and `validate here` (no URL: the full install imports
torch for the workers' checks; the light one checks the schema only).

Installs measured: this environment's `stagetune` (the full one), and with
`--light-venv PATH` a client-only one, e.g.

    python -m venv /tmp/light && /tmp/light/bin/pip install -c constraints.txt .
    python bench/cli_speed.py --light-venv /tmp/light
    python bench/cli_speed.py --runs 3 --no-write

Results go to bench/results/cli_speed.md (--no-write to skip).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import optuna  # noqa: E402
import yaml  # noqa: E402
from api_load import STUDY, build_store  # noqa: E402

from stagetune.service.client import Client  # noqa: E402
from tests.service.server import Server  # noqa: E402

SPEC = REPO / "examples" / "digits.yaml"
ENDED = ("cancelled", "completed", "stopped", "failed")


# Runs one command and writes [seconds, peak RSS bytes, exit code] to the file in argv[1]. A
# small process of its own forks it: a child forked from this one (which imported torch) would
# count our pages in its peak, as Linux keeps the largest RSS across exec.
TIMER = """
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawn(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(out, "w") as f:
    json.dump([seconds, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status)], f)
"""


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int, int, str]:
    """Seconds, peak RSS in bytes, exit code and output of one command."""
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        done = subprocess.run([sys.executable, "-I", "-c", TIMER, str(result), *argv], env=env,
                              cwd=REPO, capture_output=True, text=True, check=True)
        seconds, peak, code = json.loads(result.read_text())
    return seconds, peak, code, done.stdout + done.stderr


def measure(install: str, stagetune: str, server: Server, runs: int, tmp: Path) -> list[tuple]:
    env = {**os.environ, "STAGETUNE_URL": server.url}
    base = yaml.safe_load(SPEC.read_text())
    here = {k: v for k, v in env.items() if k != "STAGETUNE_URL"}
    commands: dict[str, object] = {
        "validate": lambda i: ["validate", str(SPEC)],  # at the service (STAGETUNE_URL)
        "validate here": lambda i: ["validate", str(SPEC)],
        "status": lambda i: ["status", STUDY],
        "trials": lambda i: ["trials", STUDY],
        "best": lambda i: ["best", STUDY],
        "submit": lambda i: ["submit", str(_spec_file(tmp, base, f"speed-{install}-{i}"))],
    }
    rows = []
    with Client(server.url, timeout=120) as api:
        for name, args_for in commands.items():
            times, peaks, note = [], [], ""
            for i in range(runs):
                seconds, peak, code, output = timed([stagetune, *args_for(i)],  # type: ignore[operator]
                                                    here if name == "validate here" else env)
                if code != 0:
                    raise SystemExit(f"{install} `stagetune {name}` exited {code}:\n{output}")
                times.append(seconds)
                peaks.append(peak)
                if name.startswith("validate"):
                    note = output.strip()[:60]
                if name == "submit":
                    _cancel(api, f"speed-{install}-{i}")
            rows.append((install, name, statistics.median(times), min(times),
                         statistics.median(peaks) / 2**20, note))
            print(f"{install:6} {name:9} {statistics.median(times):6.2f} s "
                  f"{statistics.median(peaks) / 2**20:6.0f} MiB", flush=True)
    return rows


def _spec_file(tmp: Path, base: dict, name: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**base, "name": name}))
    return path


def _cancel(api: Client, study: str) -> None:
    """Stop a submitted study before the next run, and wait until it has ended."""
    api.cancel(study)
    deadline = time.monotonic() + 120
    while api.study(study).status not in ENDED:
        if time.monotonic() > deadline:
            raise SystemExit(f"study {study} did not end within 120 s of its cancel")
        time.sleep(0.5)


def api_rss(server: Server) -> float:
    """The API's process, in MiB (its worker-code child and Ray's processes not counted)."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--light-venv", type=Path, help="a client-only install to measure too")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    installs = {"full": str(Path(sys.executable).with_name("stagetune"))}
    if args.light_venv is not None:
        installs["light"] = str(args.light_venv / "bin" / "stagetune")
    load_before = os.getloadavg()[0]
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        url = f"sqlite:///{tmp / 'store.db'}"
        build_store(url, args.trials)
        server = Server(url, tmp / "data").start(timeout=300)
        try:
            for install, stagetune in installs.items():
                rows += measure(install, stagetune, server, args.runs, tmp)
            rss = api_rss(server)
        finally:
            server.stop()
    table = render(rows, args, rss, (load_before, os.getloadavg()[0]))
    print(table)
    if not args.no_write:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "cli_speed.md").write_text(table)


def render(rows: list[tuple], args: argparse.Namespace, rss: float,
           load: tuple[float, float]) -> str:
    light = " --light-venv PATH" if args.light_venv is not None else ""
    lines = ["# Command-line speed against a running service", "",
             f"{dt.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"Python {platform.python_version()}; median of {args.runs} runs, each a fresh "
             f"process; load average {load[0]:.1f} before, {load[1]:.1f} after (the machine is "
             "shared: read the times against it).", "",
             f"Command: `python bench/cli_speed.py{light}`", "",
             "| install | command | median s | min s | peak RSS MiB | note |",
             "|---|---|--:|--:|--:|---|"]
    for install, name, median, fastest, peak, note in rows:
        lines.append(f"| {install} | {name} | {median:.2f} | {fastest:.2f} | {peak:.0f} | {note} |")
    lines += ["", f"The API's own process after the runs: {rss:.0f} MiB resident (no torch: the "
              "workers' checks run in its worker-code child, workers/sidecar.py)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
