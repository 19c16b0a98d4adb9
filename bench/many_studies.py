"""A flood of studies: 100 small studies submitted at once to a real `stagetune serve` (its
own local Ray on this machine's CPUs, a SQLite store in a temporary folder), with the
service's defaults for the queue: STAGETUNE_MAX_RUNNING_STUDIES unset (one running study
per CPU), and STAGETUNE_MAX_PENDING_PER_TOKEN raised to the number of studies (its default,
50, would refuse half of them: that is its job; the API tests check it).

Each study is digits with an MLP: the data check, then 4 coarse trials of 1 epoch, 2 refine
trials of 2 epochs and 1 configuration confirmed with 2 seeds (8 trials). The studies are
POSTed at once from one thread each; the script then polls `GET /api/studies` (one read
for all of them) twice a second and samples the server's process tree (psutil) until every
study has ended, and reports:

- **queue**: the place each study was first given ("position 97 of 98"). Then, from
  when every POST had been answered and the supervisor had looked (a tick, 2 s, later):
  whether any study's place went back (before that, a POST answered later may be queued
  ahead: requests in flight together are queued in the order the store stamped them), and
  whether studies were let through in the queue's order as it stood then: first those let
  through by then, then by their place (two let through within one poll count as in
  order);
- **time to start**: from a study's POST being answered until the queue let it through
  (its message says `starting`, or it left `pending`); and until it left `pending` (its
  runner's process came up and took the study);
- **drain**: from the first POST until the last study ended;
- **lost**: studies not completed, and studies with fewer trials recorded than planned;
- **runner memory**: the largest sum, at one sample, of the RSS of the runner actors'
  processes (`ray::StudyRunner`), and the most of them alive at once; beside it, the
  largest RSS of all Ray worker processes together (runners and trial workers).

Goals: nothing lost; runner memory <= 1 GB in all.

    python bench/many_studies.py                     # 100 studies
    python bench/many_studies.py --studies 10 --no-write

Results go to bench/results/many_studies.md (--no-write to skip).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import httpx  # noqa: E402
import psutil  # noqa: E402

from tests.service.server import Server  # noqa: E402

ENDED = ("completed", "stopped", "failed", "cancelled")
OFF = {"enabled": False}
TRIALS = 4 + 2 + 2  # coarse, refine, confirm (1 configuration x 2 seeds)
PLACE = re.compile(r"position (\d+) of (\d+)")
MB = 2**20
TICK = 2.5  # the supervisor looks every 2 s, and at once after a write


def small_spec(name: str, seed: int) -> dict[str, Any]:
    return {"name": name, "seed": seed,
            "task": {"dataset": "digits", "model": "mlp"},
            "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                      "width": {"type": "int", "low": 16, "high": 64}},
            "stages": {"baseline": OFF, "init_check": OFF, "overfit": OFF, "lr_probe": OFF,
                       "coarse": {"trials": 4, "epochs": 1},
                       "refine": {"trials": 2, "epochs": 2, "warm_start": 2},
                       "confirm": {"top": 1, "seeds": 2}},
            "resources": {"cpus_per_trial": 1, "max_concurrent": 2}}


class Sampler(threading.Thread):
    """Twice a second: the summed RSS of the runner actors' processes and of all Ray worker
    processes among the server's descendants, and how many runners are alive."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.stop = psutil.Process(root), threading.Event()
        self.runner_mb = self.workers_mb = 0.0
        self.runners = 0
        self.runner_pids: set[int] = set()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                children = self.root.children(recursive=True)
            except psutil.Error:
                return
            runner_mb = workers_mb = 0.0
            runners = 0
            for proc in children:
                try:
                    command = " ".join(proc.cmdline())
                    rss = proc.memory_info().rss / MB
                except psutil.Error:
                    continue
                if command.startswith("ray::"):
                    workers_mb += rss
                if "StudyRunner" in command:
                    runner_mb += rss
                    runners += 1
                    self.runner_pids.add(proc.pid)
            self.runner_mb = max(self.runner_mb, runner_mb)
            self.workers_mb = max(self.workers_mb, workers_mb)
            self.runners = max(self.runners, runners)


def submit_all(api: httpx.Client, specs: list[dict[str, Any]]) -> tuple[dict[str, float],
                                                                       dict[str, int]]:
    """POST every spec at once, one thread each: when each was accepted, and the status of
    every answer that was not 201."""
    accepted: dict[str, float] = {}
    refused: dict[str, int] = {}

    def post(spec: dict[str, Any]) -> None:
        response = api.post("/api/studies", json=spec)
        if response.status_code == 201:
            accepted[spec["name"]] = time.time()
        else:
            refused[spec["name"]] = response.status_code

    threads = [threading.Thread(target=post, args=(s,)) for s in specs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return accepted, refused


def watch(api: httpx.Client, names: set[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll until every study ended: per study, when it left pending and ended, and the
    places in the queue it was told, in order."""
    seen: dict[str, dict[str, Any]] = {n: {"places": []} for n in names}
    deadline = time.monotonic() + timeout
    while any("ended" not in s for s in seen.values()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s; "
                             f"{sum('ended' in s for s in seen.values())} ended")
        items = api.get("/api/studies", params={"limit": 500}).json()["items"]
        now = time.time()
        for item in items:
            study = seen.get(item["id"])
            if study is None:
                continue
            place = PLACE.search(item["message"]) if item["status"] == "pending" else None
            if place and (not study["places"] or study["places"][-1][1:] != place.groups()):
                study["places"].append((now, *place.groups()))
            if item["status"] != "pending" or item["message"] == "starting":
                study.setdefault("admitted", now)
            if item["status"] != "pending":
                study.setdefault("started", now)
            if item["status"] in ENDED:
                study.setdefault("ended", now)
        time.sleep(0.5)
    return seen


def measure(args: argparse.Namespace) -> dict[str, Any]:
    names = [f"many-{i:03d}" for i in range(args.studies)]
    env = {"STAGETUNE_MAX_PENDING_PER_TOKEN": str(args.studies)}
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(f"sqlite:///{tmp}/store.db", Path(tmp) / "data", env=env).start(timeout=180)
        sampler = Sampler(server.process.pid)  # type: ignore[union-attr]
        sampler.start()
        try:
            with httpx.Client(base_url=server.url, timeout=120) as api:
                first = time.time()
                accepted, refused = submit_all(api, [small_spec(n, i) for i, n in enumerate(names)])
                seen = watch(api, set(accepted), args.timeout)
                finals = {n: api.get(f"/api/studies/{n}").json() for n in accepted}
                trials = {n: api.get(f"/api/studies/{n}/trials", params={"limit": 1}).json()["total"]
                          for n in accepted}
        finally:
            sampler.stop.set()
            server.stop()
    order = queue_order(seen, settled=max(accepted.values()) + TICK)
    if args.dump:
        Path(args.dump).write_text(json.dumps({"first": first, "accepted": accepted,
                                               "seen": seen, "trials": trials, "order": order},
                                              default=str))
    return summarise(names, first, accepted, refused, seen, order, finals, trials, sampler)


def queue_order(seen: dict[str, dict[str, Any]], settled: float) -> list[str]:
    """The queue as it stood at `settled`: the studies let through by then (in the order
    they were), then the others by the first place they were told after it."""
    def key(name: str) -> tuple[int, float]:
        study = seen[name]
        after = [int(place) for at, place, _ in study["places"] if at > settled]
        if study["admitted"] <= settled or not after:  # not: let through before a poll saw it
            return 0, study["admitted"]
        return 1, after[0]
    return sorted(seen, key=key)


def summarise(names: list[str], first: float, accepted: dict[str, float], refused: dict[str, int],
              seen: dict[str, dict[str, Any]], order: list[str], finals: dict[str, Any],
              trials: dict[str, int], sampler: Sampler) -> dict[str, Any]:
    waits = [seen[n]["admitted"] - accepted[n] for n in order]
    running_waits = [seen[n]["started"] - accepted[n] for n in order]
    first_places = [int(s["places"][0][1]) for s in seen.values() if s["places"]]
    settled = max(accepted.values()) + TICK  # the last POST, and the tick that saw it
    went_back = {n: sum(int(b[1]) > int(a[1]) for a, b in pairwise(s["places"]) if a[0] > settled)
                 for n, s in seen.items()}
    went_back_early = [n for n, s in seen.items() if any(
        int(b[1]) > int(a[1]) for a, b in pairwise(s["places"]) if a[0] <= settled)]
    # out of order: let through more than one poll before a study queued earlier
    late = [n for i, n in enumerate(order)
            if any(seen[m]["admitted"] > seen[n]["admitted"] + 0.6 for m in order[:i])]
    return {
        "studies": len(names), "accepted": len(accepted), "refused": refused,
        "completed": sum(f["status"] == "completed" for f in finals.values()),
        "not_completed": {n: (f["status"], f["message"]) for n, f in finals.items()
                          if f["status"] != "completed"},
        "short_of_trials": {n: t for n, t in trials.items() if t < TRIALS},
        "trials": sum(trials.values()),
        "submit_s": max(accepted.values()) - first,
        "drain_s": max(s["ended"] for s in seen.values()) - first,
        "start_wait_s": {"min": min(waits), "median": statistics.median(waits),
                         "max": max(waits)},
        "running_wait_s": {"median": statistics.median(running_waits),
                           "max": max(running_waits)},
        "admit_to_running_s": {"median": statistics.median(
            seen[n]["started"] - seen[n]["admitted"] for n in order), "max": max(
            seen[n]["started"] - seen[n]["admitted"] for n in order)},
        "start_wait_by_rank": [(i + 1, round(waits[i], 1)) for i in range(0, len(order), 10)]
        + [(len(order), round(waits[-1], 1))],
        "run_s_median": statistics.median(seen[n]["ended"] - seen[n]["started"] for n in order),
        "max_first_place": max(first_places, default=0),
        "studies_told_a_place": len(first_places),
        "places_went_back": [n for n, k in went_back.items() if k],
        "places_went_back_while_posting": went_back_early, "started_out_of_order": late,
        "runner_rss_sum_mb": sampler.runner_mb, "runners_at_once": sampler.runners,
        "runner_processes": len(sampler.runner_pids), "ray_workers_rss_sum_mb": sampler.workers_mb,
    }


def report(r: dict[str, Any], label: str) -> str:
    waits = r["start_wait_s"]
    lost = len(r["not_completed"]) + len(r["short_of_trials"]) + (r["studies"] - r["accepted"])
    rows = [
        ("studies submitted / accepted (201) / refused", f"{r['studies']} / {r['accepted']} / "
                                                         f"{len(r['refused'])}"),
        ("all POSTs answered", f"{r['submit_s']:.1f} s"),
        ("completed; trials recorded", f"{r['completed']}; {r['trials']} "
                                       f"(planned {TRIALS * r['accepted']})"),
        ("lost (not completed, short of trials, refused)", str(lost)),
        ("time to drain (first POST to last end)", f"{r['drain_s']:.0f} s"),
        ("time to start (let through by the queue): min / median / max",
         f"{waits['min']:.1f} / {waits['median']:.0f} / {waits['max']:.0f} s"),
        ("time to `running` (its runner took it up): median / max",
         f"{r['running_wait_s']['median']:.0f} / {r['running_wait_s']['max']:.0f} s"),
        ("from let through to `running` (a runner process starts): median / max",
         f"{r['admit_to_running_s']['median']:.1f} / {r['admit_to_running_s']['max']:.1f} s"),
        ("a study's run, median (left pending to ended)", f"{r['run_s_median']:.1f} s"),
        ("studies told their place; the furthest place", f"{r['studies_told_a_place']}; "
                                                         f"{r['max_first_place']}"),
        ("places that went back: while POSTs were arriving (and a tick) / after",
         f"{len(r['places_went_back_while_posting'])} / {len(r['places_went_back'])}"),
        ("studies let through out of queue order", str(len(r["started_out_of_order"]))),
        ("runner processes: at once (most) / over the run", f"{r['runners_at_once']} / "
                                                           f"{r['runner_processes']}"),
        ("runner memory: largest summed RSS", f"{r['runner_rss_sum_mb']:.0f} MB"),
        ("all Ray workers (runners + trial workers): largest summed RSS",
         f"{r['ray_workers_rss_sum_mb']:.0f} MB"),
    ]
    by_rank = ", ".join(f"#{rank}: {wait:.0f} s" for rank, wait in r["start_wait_by_rank"])
    goals = [("nothing lost", lost == 0, str(lost)),
             ("runner memory <= 1 GB in all", r["runner_rss_sum_mb"] <= 1024,
              f"{r['runner_rss_sum_mb']:.0f} MB")]
    return (f"| {label} | |\n|---|--:|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
            + f"\n\nTime to start by submission rank: {by_rank}.\n\n"
            + "\n".join(f"- {'met' if ok else 'MISSED'}: {goal} ({value})" for goal, ok, value in goals)
            + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--dump", help="write every study's timings and places to this JSON")
    args = parser.parse_args()
    result = measure(args)
    print(json.dumps(result, indent=1, default=str))
    text = report(result, args.label)
    print(text)
    if not args.no_write:
        (HERE / "results" / "many_studies.md").write_text(
            f"# A flood of studies\n\n{dt.date.today()}, {platform.machine()}, {os.cpu_count()} "
            f"CPUs, Python {platform.python_version()}; {args.studies} small studies (digits, "
            f"MLP, {TRIALS} trials of 1-2 epochs each) POSTed at once to one `stagetune serve` "
            "(SQLite, its own local Ray), STAGETUNE_MAX_RUNNING_STUDIES unset (so one per "
            "CPU), STAGETUNE_MAX_PENDING_PER_TOKEN at the number of studies.\n\n"
            "Command: `python bench/many_studies.py` (the script's docstring defines each "
            "figure)\n\n" + text)


if __name__ == "__main__":
    main()
