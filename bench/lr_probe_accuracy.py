"""LR probe accuracy: does the probe's suggested lr land near the best lr of a grid?

For each task and each optimizer family the search runs the probe for (sgd with
momentum 0.9, adamw, rmsprop at the knobs' defaults, i.e. also momentum 0.9):

- the probe: `workers.execute` in mode lr_probe with `params={"optimizer": ...}`,
  seeded, default options (100 iterations, lr 1e-7 to 10, batch 64). Its suggestion
  and `lr_range` are what the search would use. The table shows seed 0, the one a
  study with seed 0 runs; seeds 1 and 2 show how much the suggestion moves.
- the grid: every half decade from 1e-5 to 10 (13 lrs), each trained E epochs
  (default 5) with a cosine schedule, default knobs otherwise, seeds 0 and 1. A point
  scores the mean over seeds of its best val_accuracy over epochs; a run that diverges
  before its first epoch ends scores the chance level 1/classes. The grid-best lr is
  the argmax.

Goal: |log10(suggestion / grid-best)| <= 0.5, i.e. within half a decade. Because the
grid's accuracy curve is often flat near its top, the table also shows the accuracy at
the grid point nearest the suggestion and the span of grid lrs within one point of
the best accuracy, which says whether a miss costs anything, and whether the grid-best
lr lies inside the probe's `lr_range` (what the search draws lr from).

Tasks: digits + mlp, mnist1d + convnet and Fashion-MNIST (5,000 training samples) +
mlp are the ones the suggestion rule was chosen on; digits + convnet and mnist1d + mlp
are held out, run only after the rule was fixed. A second table re-runs seed 0's probe
with 50 and 25 iterations, as a `max_epochs` cap would, against the same grid.

    python bench/lr_probe_accuracy.py --quick               # smoke run, about a minute
    python bench/lr_probe_accuracy.py --jobs 2              # the full run, 6-10 min on 2 cores
    python bench/lr_probe_accuracy.py --from-raw RAW.jsonl --findings NOTES.md

Threads are 1 per process (`torch.set_num_threads(1)`); `--jobs` runs that many units
(one probe or one grid run) side by side in processes; results do not depend on it.
The report goes to bench/results/lr_probe.md (use --no-write to skip); raw per-unit
JSON lines go to --raw (default: a temporary folder) with the run's facts beside it in
RAW.meta.json, so that --from-raw rebuilds the report (adding --findings) without
training anything.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import logging
import math
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)

from stagetune.workers import Task, TrialRequest, execute  # noqa: E402

log = logging.getLogger("bench.lr_probe_accuracy")

RESULTS = Path(__file__).resolve().parent / "results" / "lr_probe.md"
FASHION = {"subset": 5000, "val_subset": 2000}  # an epoch of the mlp stays ~0.1 s
TASKS: dict[str, Task] = {
    "digits/mlp": Task("digits", "mlp"),
    "mnist1d/convnet": Task("mnist1d", "convnet"),
    "fashion_mnist/mlp": Task("fashion_mnist", "mlp", dataset_options=FASHION),
    # Held out: not looked at while the suggestion rule was chosen, so they test it.
    "digits/convnet": Task("digits", "convnet"),
    "mnist1d/mlp": Task("mnist1d", "mlp"),
}
HELD_OUT = ("digits/convnet", "mnist1d/mlp")
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"optimizer": "sgd", "momentum": 0.9},
    "adamw": {"optimizer": "adamw"},
    "rmsprop": {"optimizer": "rmsprop"},
}
GRID = [10 ** (-5 + k / 2) for k in range(13)]  # 1e-5, 3.16e-5, ..., 10
QUICK_GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
FIXED = {"schedule": "cosine"}
GOAL = 0.5  # decades
ITERATIONS = 100  # the probe's default
NEAR_BEST = 0.01  # accuracy points that count as "as good as the best"


# -- units of work ----------------------------------------------------------------------


def run_unit(unit: dict[str, Any]) -> dict[str, Any]:
    """One probe or one grid run, in a worker process; returns a JSON-able record."""
    torch.set_num_threads(1)
    logging.getLogger("stagetune.workers").setLevel(logging.ERROR)  # diverged grid runs are expected
    task, params = TASKS[unit["task"]], OPTIMIZERS[unit["optimizer"]]
    started = time.perf_counter()
    if unit["kind"] == "probe":
        result = execute(TrialRequest(task, params=params, mode="lr_probe", seed=unit["seed"],
                                      options={"iterations": unit["iterations"]}))
        p = result.probe
        record = {"status": result.status, "suggested": p.get("suggested_lr"),
                  "range": p.get("lr_range"), "rule": p.get("rule"),
                  "steepest": p.get("steepest_lr"), "valley": p.get("valley_lr"),
                  "at_min": p.get("lr_at_min_loss"), "epochs_equivalent": p["epochs_equivalent"],
                  "lrs": p["lrs"], "losses": p["losses"]}
    else:
        request = TrialRequest(task, params={**params, **FIXED, "lr": unit["lr"]},
                               epochs=unit["epochs"], seed=unit["seed"])
        result = execute(request)
        accuracies = [m["val_accuracy"] for m in result.history]
        record = {"status": result.status, "best": max(accuracies) if accuracies else None}
    return unit | record | {"seconds": round(time.perf_counter() - started, 3)}


def fewer_iterations(records: list[dict[str, Any]], rows: list[dict[str, Any]],
                     counts: list[int]) -> str:
    """log10(suggestion / grid-best) of seed 0's probe at each iteration count."""
    lines = ["| task | optimizer | " + " | ".join(f"{n} iterations" for n in
                                                 [ITERATIONS, *counts]) + " |",
             "|---|---|" + "---:|" * (len(counts) + 1)]
    hits: dict[int, int] = {}
    for r in rows:
        cells = []
        for n in [ITERATIONS, *counts]:
            found = [p for p in records if p["kind"] == "probe" and p["task"] == r["task"]
                     and p["optimizer"] == r["optimizer"] and p["seed"] == 0
                     and p.get("iterations", ITERATIONS) == n]
            if not found or found[0]["suggested"] is None:
                cells.append("failed" if found else "—")
                continue
            ratio = math.log10(found[0]["suggested"] / r["best_lr"])
            cells.append(f"{ratio:+.2f} ({found[0]['epochs_equivalent']:.2f} ep)"
                         + ("" if abs(ratio) <= GOAL + 1e-9 else " ✗"))
        lines.append(f"| {label(r['task'])} | {r['optimizer']} | " + " | ".join(cells) + " |")
        for n, cell in zip([ITERATIONS, *counts], cells, strict=True):
            hits[n] = hits.get(n, 0) + (cell[0] in "+-" and "✗" not in cell)
    summary = ", ".join(f"{n} iterations {hits[n]} of {len(rows)}" for n in hits)
    return "\n".join(lines) + f"\n\nWithin half a decade: {summary}."


def units(args: argparse.Namespace) -> list[dict[str, Any]]:
    todo = []
    for task in args.task_list:
        for opt in OPTIMIZERS:
            todo += [{"kind": "probe", "task": task, "optimizer": opt, "seed": s,
                      "iterations": ITERATIONS} for s in args.probe_seeds]
            # Fewer iterations, as a max_epochs cap makes them: seed 0 only.
            todo += [{"kind": "probe", "task": task, "optimizer": opt, "seed": 0,
                      "iterations": it} for it in args.fewer_iterations]
            todo += [{"kind": "grid", "task": task, "optimizer": opt, "lr": lr, "seed": s,
                      "epochs": args.epochs} for lr in args.grid for s in args.seed_list]
    # The slow task first, so that the last units to finish are short ones.
    return sorted(todo, key=lambda u: u["task"] != "mnist1d/convnet")


# -- summary -----------------------------------------------------------------------------


def summarise(records: list[dict[str, Any]], task: str, opt: str, grid: list[float],
              chance: float = 0.1) -> dict[str, Any]:
    mine = [r for r in records if r["task"] == task and r["optimizer"] == opt]
    scores = {}
    for lr in grid:
        runs = [r for r in mine if r["kind"] == "grid" and math.isclose(r["lr"], lr)]
        if runs:
            scores[lr] = statistics.mean(r["best"] if r["best"] is not None else chance
                                         for r in runs)
    probes = sorted((r for r in mine if r["kind"] == "probe"
                     and r.get("iterations", ITERATIONS) == ITERATIONS), key=lambda r: r["seed"])
    best_lr = max(scores, key=lambda lr: scores[lr])
    near = [lr for lr, acc in scores.items() if acc >= scores[best_lr] - NEAR_BEST]
    probe = probes[0]
    out: dict[str, Any] = {"task": task, "optimizer": opt, "scores": scores, "best_lr": best_lr,
                           "best_acc": scores[best_lr], "near": (min(near), max(near)),
                           "probe": probe, "other_seeds": [p["suggested"] for p in probes[1:]]}
    if probe["suggested"] is not None:
        nearest = min(scores, key=lambda lr: abs(math.log10(lr / probe["suggested"])))
        ratio = math.log10(probe["suggested"] / best_lr)
        low, high = probe["range"]
        out |= {"nearest": nearest, "acc_at_suggestion": scores[nearest], "log_ratio": ratio,
                "ok": abs(ratio) <= GOAL + 1e-9, "in_range": low <= best_lr <= high}
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| task | optimizer | probe suggestion (seeds 1, 2) | probe range | grid-best lr "
             "| grid-best acc | acc at suggestion | lrs within 1 pt of best | "
             "log10(sugg / best) | within ½ decade | grid-best in range |",
             "|---|---|---|---|---:|---:|---:|---|---:|---|---|"]
    for r in rows:
        p = r["probe"]
        if p["suggested"] is None:
            lines.append(f"| {label(r['task'])} | {r['optimizer']} | probe {p['status']} | — | "
                         f"{r['best_lr']:.3g} | {r['best_acc']:.4f} | — | — | — | NO | NO |")
            continue
        others = ", ".join(f"{s:.2g}" if s is not None else "failed" for s in r["other_seeds"])
        others = f" ({others})" if others else ""
        low, high = p["range"]
        lines.append(
            f"| {label(r['task'])} | {r['optimizer']} | {p['suggested']:.2g}{others} | "
            f"{low:.2g}–{high:.2g} | {r['best_lr']:.3g} | {r['best_acc']:.4f} | "
            f"{r['acc_at_suggestion']:.4f} (at {r['nearest']:.3g}) | "
            f"{r['near'][0]:.3g}–{r['near'][1]:.3g} | {r['log_ratio']:+.2f} | "
            f"{'yes' if r['ok'] else 'NO'} | {'yes' if r['in_range'] else 'NO'} |")
    return "\n".join(lines)


def label(task: str) -> str:
    return f"{task} (held out)" if task in HELD_OUT else task


def grid_table(rows: list[dict[str, Any]], grid: list[float]) -> str:
    head = "| task | optimizer | " + " | ".join(f"{lr:.3g}" for lr in grid) + " |"
    lines = [head, "|---|---|" + "---:|" * len(grid)]
    for r in rows:
        cells = []
        for lr in grid:
            acc = r["scores"].get(lr)
            text = "—" if acc is None else f"{acc:.3f}"
            cells.append(f"**{text}**" if lr == r["best_lr"] else text)
        lines.append(f"| {label(r['task'])} | {r['optimizer']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for name, part in (("tasks the rule was chosen on", [r for r in rows if r["task"] not in HELD_OUT]),
                       ("held-out tasks", [r for r in rows if r["task"] in HELD_OUT])):
        if not part:
            continue
        hits = [r for r in part if r.get("ok")]
        misses = [f"{r['task']} {r['optimizer']} ({r.get('log_ratio', math.nan):+.2f} decades)"
                  for r in part if not r.get("ok")]
        inside = sum(bool(r.get("in_range")) for r in part)
        lines.append(f"- {name}: within half a decade of the grid-best lr in {len(hits)} of "
                     f"{len(part)}" + (f"; missed: {'; '.join(misses)}" if misses else "")
                     + f"; grid-best lr inside the probe's lr_range in {inside} of {len(part)}")
    return "\n".join(lines)


# -- report ------------------------------------------------------------------------------


def git_commit() -> str:
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=here, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=here, check=False).stdout.strip()
    except OSError:
        return "unknown"
    return commit + (" with uncommitted changes" if dirty else "")


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def machine(meta: dict[str, Any]) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = [f"{m} {__import__(m).__version__}" for m in ("torch", "numpy")]
    return "\n".join([
        f"- run: {meta['started']} to {meta['finished']}, wall time {meta['seconds'] / 60:.1f} min",
        f"- CPU: {cpu}; nproc {os.cpu_count()}; torch threads per process: 1; processes side "
        f"by side (--jobs): {meta['jobs']}; no GPU; the machine is shared",
        f"- Python {platform.python_version()}, {', '.join(versions)}; {platform.platform()}",
        f"- stagetune: commit {meta['commit']}",
        f"- load average (1/5/15 min): {meta['load_start']} at the start, "
        f"{meta['load_end']} at the end",
        f"- command: `{meta['command']}`",
    ] + ([f"- report rebuilt from its raw units with `{meta['rebuilt']}`"] if "rebuilt" in meta
         else []))


def setup_text(meta: dict[str, Any]) -> str:
    tasks = "; ".join(f"{name}" + (f" (dataset options {t.dataset_options})"
                                   if t.dataset_options else "") for name, t in TASKS.items()
                      if name in meta["tasks"])
    return "\n".join([
        f"- tasks: {tasks}; model knobs at their defaults (depth 2, width 32, batch norm)",
        "- optimizers: " + "; ".join(f"{k} {v}" for k, v in OPTIMIZERS.items())
        + " (the knobs' defaults otherwise: momentum 0.9 also for rmsprop, weight decay 1e-4, "
        "batch 64)",
        f"- probe: default options, seeds {', '.join(map(str, meta['probe_seeds']))} (the table's "
        "suggestion is seed 0's)",
        f"- grid: {', '.join(f'{lr:.3g}' for lr in meta['grid'])}; {meta['epochs']} epochs, "
        f"schedule cosine, seeds {', '.join(map(str, meta['seeds']))}; score = mean over "
        "seeds of the best val_accuracy over epochs",
    ])


def write(records: list[dict[str, Any]], meta: dict[str, Any], findings: str) -> str:
    rows = [summarise(records, t, o, meta["grid"]) for t in meta["tasks"] for o in OPTIMIZERS]
    probe_cost = statistics.mean(r["epochs_equivalent"] for r in records if r["kind"] == "probe"
                                 and r.get("iterations", ITERATIONS) == ITERATIONS)
    return "\n\n".join([
        "# LR probe accuracy: the probe's suggestion against a grid's best lr",
        table(rows),
        "*probe suggestion*: seed 0's `suggested_lr` (seeds 1 and 2 in brackets); *probe "
        "range*: its `lr_range`; *grid-best*: the grid lr with the highest mean (over seeds) "
        "best val_accuracy; *acc at suggestion*: that score at the grid point nearest the "
        "suggestion; *lrs within 1 pt*: the lowest and highest grid lr scoring within 0.01 of "
        f"the best. Goal: |log10(suggestion / grid-best)| <= {GOAL}. A probe costs "
        f"{probe_cost:.2f} epochs on average here.",
        "## Goal\n\n" + goal_text(rows),
        "## Findings\n\n" + (findings or "(to be written after the run)"),
        "## Fewer probe iterations\n\nA `max_epochs` cap on the probe cuts its iterations "
        "(the sweep keeps its range in bigger steps). log10(suggestion / grid-best) of seed "
        "0's probe, with its cost in epochs; ✗ marks a miss of half a decade.\n\n"
        + fewer_iterations(records, rows, meta.get("fewer_iterations", [])),
        "## Grid scores\n\nMean over seeds of the best val_accuracy; the grid-best in bold.\n\n"
        + grid_table(rows, meta["grid"]),
        "## Setup\n\n" + setup_text(meta),
        "## Machine\n\n" + machine(meta),
    ]) + "\n"


# -- driving -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated (default: all)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per grid run (default 5)")
    p.add_argument("--seeds", type=int, default=2, help="grid seeds 0..N-1 (default 2)")
    p.add_argument("--probe-seeds", type=int, default=3, help="probe seeds 0..N-1 (default 3)")
    p.add_argument("--fewer-iterations", default="50,25",
                   help="probe iteration counts also tried, seed 0 (default 50,25)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 5 grid lrs, 1 seed, 2 epochs; writes nothing")
    p.add_argument("--jobs", type=int, default=1, help="units side by side (default 1)")
    p.add_argument("--raw", type=Path, help="JSON lines of every unit (default: a temp folder)")
    p.add_argument("--from-raw", type=Path, help="only rebuild the report from a --raw file")
    p.add_argument("--findings", type=Path, help="a Markdown file for the Findings section")
    p.add_argument("--no-write", action="store_true", help="do not write the results file")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.task_list = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in args.task_list if t not in TASKS]
    if unknown:
        p.error(f"unknown task {', '.join(unknown)}; known: {', '.join(TASKS)}")
    if args.quick:
        args.seeds, args.probe_seeds, args.epochs, args.no_write = 1, 1, 2, True
    args.grid = QUICK_GRID if args.quick else GRID
    args.seed_list = list(range(args.seeds))
    args.probe_seeds = list(range(args.probe_seeds))
    args.fewer_iterations = [int(n) for n in args.fewer_iterations.split(",") if n.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    findings = args.findings.read_text().strip() if args.findings else ""
    if args.from_raw:
        records = [json.loads(line) for line in args.from_raw.read_text().splitlines() if line]
        meta = json.loads(args.from_raw.with_suffix(".meta.json").read_text())
        meta["rebuilt"] = f"python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}"
    else:
        records, meta = run(args)
    text = write(records, meta, findings)
    sys.stdout.write(text)
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        log.info("wrote %s", args.output)
    return 0


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    meta: dict[str, Any] = {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_start": load_average(), "jobs": args.jobs, "commit": git_commit(),
        "command": f"python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}",
        "tasks": args.task_list, "grid": args.grid, "epochs": args.epochs,
        "seeds": args.seed_list, "probe_seeds": args.probe_seeds,
        "fewer_iterations": args.fewer_iterations,
    }
    raw = args.raw or Path(tempfile.mkdtemp(prefix="lr_probe-")) / "raw.jsonl"
    todo = units(args)
    log.info("%d units; raw results in %s", len(todo), raw)
    started = time.perf_counter()
    records = []
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool, \
            raw.open("w") as out:
        for i, record in enumerate(pool.map(run_unit, todo, chunksize=4), 1):
            records.append(record)
            out.write(json.dumps(record) + "\n")
            if i % 25 == 0 or i == len(todo):
                log.info("%d/%d units, %.1f min", i, len(todo), (time.perf_counter() - started) / 60)
    meta |= {"finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
             "load_end": load_average(), "seconds": round(time.perf_counter() - started, 1)}
    raw.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return records, meta


if __name__ == "__main__":
    sys.exit(main())
