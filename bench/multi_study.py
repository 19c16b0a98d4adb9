"""Many studies at once: 8 small studies submitted together to a real `stagetune serve`
(its own local Ray on this machine's CPUs, a SQLite store in a temporary folder).

Each study is digits with an MLP, probes off, a few 1-3 epoch trials in coarse, refine
and confirm, `max_concurrent` 4 (more than the 2 CPUs can run). The studies are POSTed
at once from 8 threads; the script then polls the API and samples the server's process
tree (psutil) until every study has ended, and reports:

- **all running**: from the first POST until the last study left `pending`;
- **wall / serial**: from the first POST until the last study ended, against the serial
  sum of the trials' compute (each trial's `seconds` from the API);
- **longest wait**: a trial waits from when its runner asked Optuna for it (the trial's
  `started_at`, just before the runner hands it to Ray) until its worker began it
  (`worker.started_at`). Its *idle wait* is the part of that during which fewer trials
  ran, across all studies, than the machine has CPUs: waiting while a CPU was idle. The
  goal compares the longest idle wait with two median trial lengths;
- **reused workers**: the share of trials whose worker process (`worker.pid` on its node)
  had already run an earlier trial, of any study;
- **runner RSS**: the largest RSS (and USS) seen of any runner actor's process
  (`ray::StudyRunner`), sampled every second, and how many worker processes ran trials.

Goals: all 8 running within 10 s; wall <= 1.3x serial compute; no idle wait longer than
two trial lengths; runner RSS <= 250 MB.

    python bench/multi_study.py                  # 8 studies
    python bench/multi_study.py --studies 4 --label "before" --no-write

Results go to bench/results/multi_study.md (--no-write to skip).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import httpx  # noqa: E402
import psutil  # noqa: E402

from tests.service.server import Server  # noqa: E402

ENDED = ("completed", "stopped", "failed", "cancelled")
OFF = {"enabled": False}


def small_spec(name: str, seed: int, model: str = "mlp") -> dict[str, Any]:
    return {"name": name, "seed": seed,
            "task": {"dataset": "digits", "model": model},
            "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                      "width": {"type": "int", "low": 16, "high": 64}},
            "stages": {"baseline": OFF, "init_check": OFF, "overfit": OFF, "lr_probe": OFF,
                       "coarse": {"trials": 6, "epochs": 1},
                       "refine": {"trials": 4, "epochs": 3, "warm_start": 2},
                       "confirm": {"top": 1, "seeds": 2}},
            "resources": {"cpus_per_trial": 1, "max_concurrent": 4}}


class Sampler(threading.Thread):
    """Every second: the RSS and USS of each runner actor's process, and the pids of the
    processes that ran trials, among the server's descendants."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.stop = psutil.Process(root), threading.Event()
        self.rss: dict[int, float] = {}
        self.uss: dict[int, float] = {}

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                children = self.root.children(recursive=True)
            except psutil.Error:
                return
            for proc in children:
                try:
                    if "StudyRunner" not in " ".join(proc.cmdline()):
                        continue
                    info = proc.memory_full_info()
                except psutil.Error:
                    continue
                self.rss[proc.pid] = max(self.rss.get(proc.pid, 0.0), info.rss / 2**20)
                self.uss[proc.pid] = max(self.uss.get(proc.pid, 0.0), info.uss / 2**20)


def submit_all(api: httpx.Client, specs: list[dict[str, Any]]) -> dict[str, float]:
    """POST every spec at once, one thread each; the time each was accepted."""
    accepted: dict[str, float] = {}

    def post(spec: dict[str, Any]) -> None:
        response = api.post("/api/studies", json=spec)
        response.raise_for_status()
        accepted[spec["name"]] = time.time()

    threads = [threading.Thread(target=post, args=(s,)) for s in specs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return accepted


def watch(api: httpx.Client, names: list[str], timeout: float) -> tuple[dict[str, float],
                                                                       dict[str, float]]:
    """Poll until every study ended: when each left pending, and when each ended."""
    running: dict[str, float] = {}
    ended: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(ended) < len(names):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s; ended: {sorted(ended)}")
        items = api.get("/api/studies", params={"limit": 500}).json()["items"]
        now = time.time()
        for item in items:
            if item["id"] in names and item["status"] != "pending":
                running.setdefault(item["id"], now)
            if item["id"] in names and item["status"] in ENDED:
                ended.setdefault(item["id"], now)
        time.sleep(0.25)
    return running, ended


def study_trials(api: httpx.Client, name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = api.get(f"/api/studies/{name}/trials",
                       params={"offset": len(out), "limit": 500}).json()
        out += page["items"]
        if len(page["items"]) < 500:
            return out


def _epoch(stamp: str) -> float:
    """An API time as epoch seconds (a time without an offset is this machine's local time,
    as Optuna records it)."""
    return dt.datetime.fromisoformat(stamp).timestamp()


def idle_wait(start: float, end: float, busy: list[tuple[float, float]], cpus: int) -> float:
    """The part of [start, end] during which fewer than `cpus` of the `busy` intervals ran."""
    edges = sorted({start, end, *(t for iv in busy for t in iv if start < t < end)})
    idle = 0.0
    for left, right in zip(edges, edges[1:], strict=False):
        middle = (left + right) / 2
        if sum(a <= middle < b for a, b in busy) < cpus:
            idle += right - left
    return idle


def measure(args: argparse.Namespace) -> dict[str, Any]:
    names = [f"multi-{i}" for i in range(args.studies)]
    with tempfile.TemporaryDirectory() as tmp:
        # every study runs at once, as before the queue (bench/many_studies.py measures it)
        server = Server(f"sqlite:///{tmp}/store.db", Path(tmp) / "data", env={
            "STAGETUNE_MAX_RUNNING_STUDIES": str(args.studies)}).start(timeout=180)
        sampler = Sampler(server.process.pid)  # type: ignore[union-attr]
        sampler.start()
        try:
            with httpx.Client(base_url=server.url, timeout=60) as api:
                first = time.time()
                accepted = submit_all(api, [small_spec(n, i, args.model)
                                            for i, n in enumerate(names)])
                running, ended = watch(api, names, args.timeout)
                statuses = {n: api.get(f"/api/studies/{n}").json()["status"] for n in names}
                trials = [t for n in names for t in study_trials(api, n)]
        finally:
            sampler.stop.set()
            server.stop()
    if args.dump:  # the raw material, to look into a run
        Path(args.dump).write_text(json.dumps(
            {"first": first, "accepted": accepted, "running": running, "ended": ended,
             "trials": trials, "runner_rss": sampler.rss}, default=str))
    return summarise(args, names, first, accepted, running, ended, statuses, trials, sampler)


def summarise(args: argparse.Namespace, names: list[str], first: float,
              accepted: dict[str, float], running: dict[str, float], ended: dict[str, float],
              statuses: dict[str, str], trials: list[dict[str, Any]],
              sampler: Sampler) -> dict[str, Any]:
    ran = [t for t in trials if t.get("worker") and t.get("started_at")]
    busy = [(t["worker"]["started_at"], t["worker"]["finished_at"]) for t in ran]
    lengths = [b - a for a, b in busy]
    # warm: once every worker process that ran trials had begun its first (its start, the
    # import of the training code and the data's load are behind it)
    firsts: dict[tuple[str, int], float] = {}
    for t, (start, _) in zip(ran, busy, strict=True):
        key = (t["worker"]["node"], t["worker"]["pid"])
        firsts[key] = min(firsts.get(key, start), start)
    warm = max(firsts.values(), default=0.0)
    waits, idle, idle_warm = [], [], [0.0]
    for t, (start, _) in zip(ran, busy, strict=True):
        asked = min(_epoch(t["started_at"]), start)
        waits.append(start - asked)
        idle.append(idle_wait(asked, start, busy, args.cpus))
        if asked > warm:
            idle_warm.append(idle[-1])
    seen: set[tuple[str, int]] = set()
    reused = 0
    for t in sorted(ran, key=lambda t: t["worker"]["started_at"]):
        key = (t["worker"]["node"], t["worker"]["pid"])
        reused += key in seen
        seen.add(key)
    serial = sum(t["seconds"] if t.get("seconds") is not None else b - a
                 for t, (a, b) in zip(ran, busy, strict=True))
    wall = max(ended.values()) - first
    return {
        "studies": len(names), "statuses": statuses, "trials": len(trials), "ran": len(ran),
        "all_running_s": max(running.values()) - first,
        "submit_s": max(accepted.values()) - first,
        "wall_s": wall, "serial_s": serial, "wall_over_serial": wall / serial if serial else 0,
        "median_trial_s": statistics.median(lengths) if lengths else 0.0,
        "max_wait_s": max(waits, default=0.0), "max_idle_wait_s": max(idle, default=0.0),
        "max_idle_wait_warm_s": max(idle_warm), "warm_s": warm - first if busy else 0.0,
        "reused": reused, "workers": len(seen),
        "runner_rss_mb": max(sampler.rss.values(), default=0.0),
        "runner_uss_mb": max(sampler.uss.values(), default=0.0),
        "runners_seen": len(sampler.rss),
    }


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    head = ("| run | all running s | wall s | serial trial compute s | wall / serial | "
            "median trial s | longest wait s | longest idle-CPU wait s (once warm) | trials "
            "on a reused worker | worker processes | runner RSS MB (USS) |\n"
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
    lines = [f"| {label} | {r['all_running_s']:.1f} | {r['wall_s']:.0f} | {r['serial_s']:.0f} "
             f"| {r['wall_over_serial']:.2f} | {r['median_trial_s']:.1f} | {r['max_wait_s']:.1f} "
             f"| {r['max_idle_wait_s']:.1f} ({_warm(r)}) | {r['reused']}/{r['ran']} "
             f"({100 * r['reused'] / max(r['ran'], 1):.0f}%) | {r['workers']} "
             f"| {r['runner_rss_mb']:.0f} ({r['runner_uss_mb']:.0f}) |"
             for label, r in rows]
    return head + "\n".join(lines) + "\n"


def _warm(r: dict[str, Any]) -> str:
    return f"{r['max_idle_wait_warm_s']:.2f}" if "max_idle_wait_warm_s" in r else "-"


def verdicts(r: dict[str, Any]) -> str:
    goals = [
        ("all 8 running within 10 s", r["all_running_s"] <= 10, f"{r['all_running_s']:.1f} s"),
        ("wall <= 1.3x serial compute", r["wall_over_serial"] <= 1.3,
         f"{r['wall_over_serial']:.2f}x"),
        ("no idle-CPU wait over two trial lengths",
         r["max_idle_wait_s"] <= 2 * r["median_trial_s"],
         f"{r['max_idle_wait_s']:.1f} s against {2 * r['median_trial_s']:.2f} s; once the "
         f"workers were warm ({r.get('warm_s', 0):.0f} s in): {_warm(r)} s"),
        ("runner RSS <= 250 MB", r["runner_rss_mb"] <= 250, f"{r['runner_rss_mb']:.0f} MB"),
    ]
    return "\n".join(f"- {'met' if ok else 'MISSED'}: {goal} ({value})"
                     for goal, ok, value in goals) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--model", default="mlp", choices=["mlp", "convnet"],
                        help="convnet: trials some ten times longer")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1,
                        help="the CPUs the server's local Ray has (default: this machine's)")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--dump", help="write the studies' trials and timings to this JSON")
    args = parser.parse_args()
    result = measure(args)
    print(result)
    rows = [(args.label, result)]
    print(table(rows) + verdicts(result))
    if not args.no_write:
        out = HERE / "results" / "multi_study.md"
        out.write_text(
            f"# Many studies at once\n\n{dt.date.today()}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"{args.studies} studies submitted at once to one `stagetune serve` (SQLite, "
            f"its own local Ray).\n\nCommand: `python bench/multi_study.py`\n\n"
            + table(rows) + "\n" + verdicts(result))


if __name__ == "__main__":
    main()
