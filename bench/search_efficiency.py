"""Search efficiency: stagetune's staged search against random search, TPE and TPE+Hyperband.

Every strategy searches the same space (lr, weight_decay, batch_size, width, dropout,
optimizer; cosine schedule fixed) for a convnet on the same task, and gets the same
budget in training epochs:

- stagetune: a full staged study (baseline, init_check, overfit, lr_probe, coarse,
  refine, confirm) through `studies.runner.Runner` on a throw-away SQLite store. Its
  budget is whatever it spent, probes included (as the epoch equivalents they report)
  and the confirm re-runs included.
- random, tpe, tpe_hyperband: Optuna's RandomSampler(seed), TPESampler(seed) at its
  defaults, and TPESampler(seed) with HyperbandPruner(min_resource=1, max_resource=E),
  each launching E-epoch trials (E = the staged refine stage's epochs) through
  `workers.execute` until it has spent the staged run's budget for the same seed; the
  last trial is cut off when the budget runs out.

Epochs are counted the same way for all: every reported epoch counts 1, and a trial that
diverges counts the epoch it diverged in as well (the training loop abandons it
mid-epoch). For the staged run the order of events is rebuilt from the store: stages in
order, trials of a stage in trial-number order (the LocalExecutor runs one at a time).

For each task and strategy the table shows, over the seeds: the median of the best
val_accuracy seen in any epoch of any trial within the budget, and for each of the
task's two targets (an easier one and one the strong runs reach) the median number of
epochs spent until some epoch first reached it (a run that never reaches it counts as
infinite, so the median is "not reached" when more than half miss it).

    python bench/search_efficiency.py --quick            # smoke test, 1-2 minutes
    python bench/search_efficiency.py --jobs 2           # the full benchmark, ~50 min
    python bench/search_efficiency.py --tasks digits --seeds 3
    python bench/search_efficiency.py --from-raw RUNS.jsonl --findings NOTES.md

Threads are 1 per process (`torch.set_num_threads(1)`); `--jobs` runs that many
(task, seed) units side by side in separate processes. Results do not depend on
`--jobs` (they are counted in epochs, and every run is seeded and deterministic), only
the wall time does. The table, per-run details and the machine facts go to
bench/results/search_efficiency.md (use --no-write to skip); raw per-run JSON lines go
to --raw (default: a file in the temporary work folder), with the run's facts in
RUNS.meta.json beside it, so that --from-raw can rebuild the report (adding a Findings
section from --findings) without training anything.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from studies.space import to_distributions  # noqa: E402
from studies.spec import load_spec  # noqa: E402
from workers import StagetuneError, Task, TrialRequest, execute  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search_efficiency.md"
STRATEGIES = ("stagetune", "random", "tpe", "tpe_hyperband")
PROBE_STAGES = ("baseline", "init_check", "overfit", "lr_probe")
SEARCH_STAGES = ("coarse", "refine", "confirm")

# One space for every strategy, in the spec's format (studies.space maps it to Optuna).
SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "width": {"type": "int", "low": 8, "high": 128, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adamw", "rmsprop"]},
}
FIXED: dict[str, Any] = {"schedule": "cosine"}


@dataclass(frozen=True)
class TaskConfig:
    targets: tuple[float, ...]  # val_accuracy levels: an easier one, and one the strong runs reach
    stages: dict[str, Any]  # the staged spec's stage settings


STAGES: dict[str, Any] = {
    "overfit": {"samples": 64, "steps": 300},
    "lr_probe": {"iterations": 100},
    "coarse": {"trials": 16, "epochs": 2, "sampler": "qmc"},
    "refine": {"trials": 12, "epochs": 10, "sampler": "tpe", "pruner": "median",
               "warm_start": 4},
    "confirm": {"top": 2, "seeds": 2},
}
# Validation sets: digits 360 samples (0.995 allows 1 error), mnist1d 1,000.
TASKS: dict[str, TaskConfig] = {
    "digits": TaskConfig((0.98, 0.995), STAGES),
    "mnist1d": TaskConfig((0.95, 0.97), STAGES),
}
QUICK_STAGES: dict[str, Any] = {
    "overfit": {"samples": 32, "steps": 60},
    "lr_probe": {"iterations": 30},
    "coarse": {"trials": 4, "epochs": 1, "sampler": "qmc"},
    "refine": {"trials": 3, "epochs": 2, "sampler": "tpe", "pruner": "median", "warm_start": 2},
    "confirm": {"top": 1, "seeds": 1},
}


@dataclass
class Run:
    """One strategy's search on one task with one seed."""

    task: str
    strategy: str
    seed: int
    budget: float  # epochs this run was allowed (stagetune: what it spent)
    spent: float = 0.0  # epochs it spent, counted the common way
    trials: int = 0
    best: float = math.nan  # best val_accuracy of any epoch within the budget
    seconds: float = 0.0
    states: dict[str, int] = field(default_factory=dict)  # trial outcomes
    extra: dict[str, Any] = field(default_factory=dict)  # stagetune: per-stage epochs, report
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (epochs spent, val_acc)

    def see(self, epochs: float, value: float | None) -> None:
        """Count `epochs` more; `value` is the val_accuracy at the end of them (if any)."""
        self.spent += epochs
        if value is None:
            return
        self.timeline.append((round(self.spent, 3), value))
        if not value <= self.best:  # also true while best is nan
            self.best = value

    def to_target(self, target: float) -> float:
        """Epochs spent until an epoch first reached `target`; infinite if none did."""
        return next((spent for spent, value in self.timeline if value >= target), math.inf)


# -- stagetune ---------------------------------------------------------------------------


def staged_spec(task: str, seed: int, stages: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"bench-{task}-s{seed}",
        "task": {"dataset": task, "model": "convnet", "objective": "val_accuracy"},
        "space": SPACE,
        "fixed": FIXED,
        "stages": stages,
        "resources": {"cpus_per_trial": 1, "max_concurrent": 1},
        "seed": seed,
    }


def run_staged(task: str, seed: int, stages: dict[str, Any], work: Path) -> Run:
    from studies.runner import Runner  # needs studies.diagnosis (confirm stage)
    from studies.store import Store

    spec = load_spec(staged_spec(task, seed, stages))
    db = work / f"{spec.name}-{os.getpid()}-{time.time_ns()}.db"
    store = Store(f"sqlite:///{db}")
    started = time.perf_counter()
    report = Runner(spec, store).run()
    seconds = time.perf_counter() - started

    run = Run(task, "stagetune", seed, budget=0.0, seconds=seconds)
    record = store.study(spec.name)
    per_stage: dict[str, float] = {}
    for stage in record.stages:  # in protocol order
        before = run.spent
        if stage.name in PROBE_STAGES:
            run.see(stage.epochs, None)  # probes report no val_accuracy
        elif stage.status == "done" and stage.verdict != "skipped":
            curves = store.curves(spec.name, stage.name)
            study = optuna.load_study(study_name=f"{spec.name}:{stage.name}",
                                      storage=store.optuna_storage)
            for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
                run.trials += 1
                status = trial.user_attrs.get("status", trial.state.name.lower())
                run.states[status] = run.states.get(status, 0) + 1
                for metrics in curves.get(trial.number, []):
                    run.see(1.0, metrics.get("val_accuracy"))
                if status == "diverged":
                    run.see(1.0, None)  # the epoch it diverged in
        per_stage[stage.name] = round(run.spent - before, 3)
    run.budget = run.spent
    run.extra = {
        "stage_epochs": per_stage,
        "reported_epochs": report.compute["epochs"],
        "status": report.status,
        "message": report.message,
        "verdicts": {s["name"]: s["verdict"] for s in report.stages},
        "confirmed": report.best["value"] if report.best else None,
        "best_params": report.best["params"] if report.best else None,
        "baseline": report.baseline,
        "lr_range": next((s.hand_on["lr_range"] for s in record.stages
                          if "lr_range" in s.hand_on), None),
    }
    db.unlink(missing_ok=True)
    return run


# -- Optuna peers ------------------------------------------------------------------------


def run_peer(task: str, strategy: str, seed: int, budget: float, epochs: int) -> Run:
    """Ask-run-tell with `strategy`'s sampler (and pruner) until `budget` epochs are spent."""
    sampler: optuna.samplers.BaseSampler = (
        optuna.samplers.RandomSampler(seed=seed) if strategy == "random"
        else optuna.samplers.TPESampler(seed=seed))
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
        if strategy == "tpe_hyperband" else optuna.pruners.NopPruner())
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    distributions = to_distributions(load_spec(staged_spec(task, seed, {})).space)
    run = Run(task, strategy, seed, budget=budget)
    started = time.perf_counter()
    failures = 0
    while run.spent + 1 <= budget + 1e-9:  # room for at least one more epoch
        trial = study.ask(distributions)
        run.trials += 1
        values: list[float] = []
        why = {"pruned": False, "budget": False}

        def report(epoch: int, metrics: dict[str, float], trial: optuna.Trial = trial,
                   values: list[float] = values, why: dict[str, bool] = why) -> bool:
            value = metrics["val_accuracy"]
            run.see(1.0, value)
            values.append(value)
            if strategy == "tpe_hyperband":
                trial.report(value, epoch)
                why["pruned"] = trial.should_prune()
            why["budget"] = run.spent + 1 > budget + 1e-9
            return why["pruned"] or why["budget"]

        request = TrialRequest(Task(task, "convnet"), params={**FIXED, **trial.params},
                               epochs=epochs, seed=seed * 10_000 + trial.number)
        try:
            result = execute(request, report)
        except StagetuneError as exc:
            logging.getLogger(__name__).warning("trial failed: %s", exc)
            study.tell(trial, state=TrialState.FAIL)
            run.states["failed"] = run.states.get("failed", 0) + 1
            failures += 1
            if failures > 20:
                raise
            continue
        status = result.status
        if status == "diverged":
            run.see(1.0, None)  # the epoch it diverged in
            study.tell(trial, state=TrialState.FAIL)
        elif why["pruned"]:
            status = "pruned"
            study.tell(trial, state=TrialState.PRUNED)
        elif not values:
            study.tell(trial, state=TrialState.FAIL)
        else:
            if why["budget"] and status == "stopped":
                status = "cut_by_budget"
            study.tell(trial, max(values))
        run.states[status] = run.states.get(status, 0) + 1
    run.seconds = time.perf_counter() - started
    return run


# -- driving -----------------------------------------------------------------------------


def run_unit(task: str, seed: int, strategies: tuple[str, ...], stages: dict[str, Any],
             work: str) -> list[Run]:
    """stagetune first (it sets the budget), then the peers on the same budget."""
    torch.set_num_threads(1)
    quiet()
    staged = run_staged(task, seed, stages, Path(work))
    runs = [staged]
    log(f"{task} seed {seed}: stagetune best {staged.best:.4f}, {reached(staged)}, "
        f"budget {staged.budget:.1f} epochs, {staged.seconds:.0f} s")
    for strategy in strategies:
        if strategy == "stagetune":
            continue
        run = run_peer(task, strategy, seed, staged.budget, stages["refine"]["epochs"])
        runs.append(run)
        log(f"{task} seed {seed}: {strategy} best {run.best:.4f}, {reached(run)}, "
            f"{run.trials} trials, {run.spent:.0f} epochs, {run.seconds:.0f} s")
    return runs


def reached(run: Run) -> str:
    return ", ".join(f"{t:g} at {fmt_epochs(run.to_target(t))}" for t in TASKS[run.task].targets)


def quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("studies", "workers"):  # diverged trials are expected in a wide space
        logging.getLogger(name).setLevel(logging.ERROR)


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


# -- report ------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def fmt_epochs(value: float) -> str:
    return "not reached" if math.isinf(value) else f"{value:.0f}"


def summarise(runs: list[Run], task: str, strategy: str) -> dict[str, Any]:
    mine = [r for r in runs if r.task == task and r.strategy == strategy]
    bests = [r.best for r in mine]
    reach = {t: [r.to_target(t) for r in mine] for t in TASKS[task].targets}
    return {
        "n": len(mine),
        "best": median(bests),
        "best_range": (min(bests), max(bests)) if bests else (math.nan, math.nan),
        "to_target": {t: median(v) for t, v in reach.items()},
        "missed": {t: sum(math.isinf(x) for x in v) for t, v in reach.items()},
        "budget": median([r.spent for r in mine]),
        "trials": median([r.trials for r in mine]),
    }


def ratio(theirs: float, ours: float) -> str:
    if math.isinf(ours):
        return "n/a"
    return "∞" if math.isinf(theirs) else f"{theirs / ours:.2f}×"


def table(runs: list[Run], tasks: list[str], strategies: tuple[str, ...]) -> tuple[str, list[str]]:
    lines = [
        "| task | strategy | seeds | trials | epochs spent | best val_accuracy (min–max) "
        "| target | epochs to target (missed) | vs stagetune |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    verdicts = []
    for task in tasks:
        ref = summarise(runs, task, "stagetune")
        peers: dict[str, dict[str, Any]] = {}
        for strategy in strategies:
            s = summarise(runs, task, strategy)
            if not s["n"]:
                continue
            peers[strategy] = s
            lo, hi = s["best_range"]
            for i, t in enumerate(TASKS[task].targets):
                head = (f"| {task} | {strategy} | {s['n']} | {s['trials']:.0f} | "
                        f"{s['budget']:.0f} | {s['best']:.4f} ({lo:.4f}–{hi:.4f}) |") if i == 0 \
                    else "| | | | | | |"
                vs = "—" if strategy == "stagetune" else ratio(s["to_target"][t], ref["to_target"][t])
                lines.append(f"{head} {t:g} | {fmt_epochs(s['to_target'][t])} "
                             f"({s['missed'][t]}/{s['n']}) | {vs} |")
        verdicts.append(goal(task, ref, peers))
    return "\n".join(lines), verdicts


def goal(task: str, ref: dict[str, Any], peers: dict[str, dict[str, Any]]) -> str:
    """The issue's goal: <= 1/2 of TPE's and <= 1/4 of random's epochs to target, and a
    final accuracy at least every peer's."""
    checks = []
    for t in TASKS[task].targets:
        for strategy, factor in (("tpe", 2), ("random", 4)):
            if strategy not in peers:
                continue
            theirs, ours = peers[strategy]["to_target"][t], ref["to_target"][t]
            ok = (not math.isinf(ours)) and (math.isinf(theirs) or factor * ours <= theirs)
            checks.append(f"target {t:g}: ≤ 1/{factor} of {strategy}'s epochs "
                          f"({fmt_epochs(ours)} vs {fmt_epochs(theirs)}): {'yes' if ok else 'NO'}")
    worse = [f"{s} {p['best']:.4f}" for s, p in peers.items()
             if s != "stagetune" and p["best"] > ref["best"]]
    checks.append("median best val_accuracy ≥ every peer's: " + (
        "yes" if not worse else f"NO (stagetune {ref['best']:.4f} < {', '.join(worse)})"))
    return f"- **{task}**: " + "; ".join(checks)


def details(runs: list[Run]) -> str:
    lines = ["| task | seed | strategy | trials | epochs | best | epochs to targets | "
             "outcomes | notes |", "|---|---:|---|---:|---:|---:|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r.task, r.seed, STRATEGIES.index(r.strategy))):
        notes = ""
        if r.strategy == "stagetune":
            e = r.extra
            stages = ", ".join(f"{k} {v:g}" for k, v in e["stage_epochs"].items())
            confirmed = f"{e['confirmed']:.4f}" if e.get("confirmed") is not None else "—"
            lr = e.get("lr_range")
            lr_text = f"; lr range {lr[0]:.2g}–{lr[1]:.2g}" if lr else "; no lr range"
            notes = (f"{e['status']}; epochs by stage: {stages}; confirmed mean {confirmed}"
                     f"{lr_text}; runner's count {e['reported_epochs']:g}")
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r.states.items()))
        to = ", ".join(f"{t:g}: {fmt_epochs(r.to_target(t))}" for t in TASKS[r.task].targets)
        lines.append(f"| {r.task} | {r.seed} | {r.strategy} | {r.trials} | {r.spent:.1f} | "
                     f"{r.best:.4f} | {to} | {outcomes} | {notes} |")
    return "\n".join(lines)


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


def start_meta(args: argparse.Namespace) -> dict[str, Any]:
    """What the Machine section needs about the run itself (kept beside --raw)."""
    return {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_start": load_average(),
        "command": f"python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}",
        "jobs": args.jobs,
        "commit": git_commit(),
    }


def machine(meta: dict[str, Any]) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for module in ("torch", "optuna", "numpy", "sklearn", "mnist1d"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except (ImportError, AttributeError):
            pass
    lines = [
        f"- run: {meta['started']} to {meta['finished']}, wall time "
        f"{meta['seconds'] / 60:.1f} min",
        f"- CPU: {cpu}; nproc {os.cpu_count()}; torch threads per process: 1; "
        f"processes side by side (--jobs): {meta['jobs']}; no GPU; the machine is shared "
        "(its load counts other sessions' work too)",
        f"- Python {platform.python_version()}, {', '.join(versions)}; {platform.platform()}",
        f"- stagetune: commit {meta['commit']}",
        f"- load average (1/5/15 min): {meta['load_start']} at the start, "
        f"{meta['load_end']} at the end",
        f"- command: `{meta['command']}`",
    ]
    lines += [f"- {note}" for note in meta.get("notes", [])]
    return "\n".join(lines)


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def setup_text(args: argparse.Namespace, tasks: list[str], stages_of: dict[str, dict]) -> str:
    space = ", ".join(
        f"{k} {v['low']:g}–{v['high']:g}{' log' if v.get('log') else ''}" if "low" in v
        else f"{k} {{{', '.join(map(str, v['choices']))}}}" for k, v in SPACE.items())
    lines = [f"- space (all strategies): {space}; fixed: schedule cosine; model convnet "
             "(depth 2, batch norm, defaults otherwise)"]
    for task in tasks:
        st = stages_of[task]
        lines.append(
            f"- {task}: targets val_accuracy {', '.join(f'{t:g}' for t in TASKS[task].targets)}; "
            "stagetune stages: "
            f"overfit {st['overfit']['samples']} samples × {st['overfit']['steps']} steps, "
            f"lr_probe {st['lr_probe']['iterations']} iterations, coarse "
            f"{st['coarse']['trials']} × {st['coarse']['epochs']} epochs ({st['coarse']['sampler']}), "
            f"refine {st['refine']['trials']} × {st['refine']['epochs']} epochs (TPE, "
            f"{st['refine']['pruner']} pruner, warm start {st['refine']['warm_start']}), confirm "
            f"top {st['confirm']['top']} × {st['confirm']['seeds']} seeds × "
            f"{st['refine']['epochs']} epochs; peers' trials: {st['refine']['epochs']} epochs each")
    lines.append(f"- seeds: {', '.join(map(str, args.seed_list))} (the staged study's seed; "
                 "the peers' sampler seed)")
    return "\n".join(lines)


def write(args: argparse.Namespace, runs: list[Run], tasks: list[str],
          stages_of: dict[str, dict], meta: dict[str, Any]) -> str:
    body, verdicts = table(runs, tasks, args.strategies)
    text = "\n\n".join([
        "# Search efficiency: stagetune vs random search, TPE and TPE+Hyperband",
        body,
        "Per task and strategy, medians over the seeds. *epochs spent*: the budget, which is "
        "what the staged study spent (probes as epoch equivalents, confirm re-runs included); "
        "the peers get the same number for the same seed, rounded down to whole epochs. *best "
        "val_accuracy*: the best of any epoch of any trial within the budget. *epochs to "
        "target*: epochs spent until an epoch first reached the target (a run that never did "
        "counts as infinite). *vs stagetune*: the peer's median epochs to target over "
        "stagetune's (the goal: ≥ 2× for tpe, ≥ 4× for random).",
        "## Goal\n\n" + "\n".join(verdicts),
        "## Findings\n\n" + (args.findings or "(to be written after the run)"),
        "## Setup\n\n" + setup_text(args, tasks, stages_of),
        "## Machine\n\n" + machine(meta),
        "## Per run\n\n" + details(runs),
    ]) + "\n"
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    p.add_argument("--tasks", default="digits,mnist1d",
                   help=f"comma-separated, from {', '.join(TASKS)} (default: all)")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help="comma-separated (stagetune always runs: it sets the budget)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 seed, tiny stages; writes nothing unless --write")
    p.add_argument("--jobs", type=int, default=1,
                   help="(task, seed) units run side by side in processes (default 1)")
    p.add_argument("--raw", type=Path, help="JSON lines of every run (default: in the work dir)")
    p.add_argument("--from-raw", type=Path,
                   help="only rebuild the report from a --raw file of an earlier run")
    p.add_argument("--findings", type=Path,
                   help="a Markdown file whose text goes under 'Findings'")
    p.add_argument("--no-write", action="store_true", help="do not write the results file")
    p.add_argument("--write", action="store_true", help="write the results file even in --quick")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.task_list = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in args.task_list if t not in TASKS]
    if unknown:
        p.error(f"unknown task {', '.join(unknown)}; known: {', '.join(TASKS)}")
    args.strategies = tuple(s for s in STRATEGIES
                            if s == "stagetune" or s in args.strategies.split(","))
    if args.quick:
        args.seeds = 1
    args.seed_list = list(range(args.seeds))
    args.findings = args.findings.read_text().strip() if args.findings else ""
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet()
    stages_of = {t: QUICK_STAGES if args.quick else TASKS[t].stages for t in args.task_list}
    started = time.perf_counter()
    runs: list[Run] = []
    if args.from_raw:
        runs = [Run(**json.loads(line)) for line in args.from_raw.read_text().splitlines()
                if line.strip()]
        runs = [r for r in runs if r.task in args.task_list and r.seed in args.seed_list]
        meta = json.loads(args.from_raw.with_suffix(".meta.json").read_text())
    else:
        meta = start_meta(args)
        work = Path(tempfile.mkdtemp(prefix="search_efficiency-"))
        raw = args.raw or work / "runs.jsonl"
        log(f"work dir {work}; raw results {raw}")
        # The slower task first, so that the last units to finish are short ones.
        units = [(t, s) for t in sorted(args.task_list, key=lambda t: t != "mnist1d")
                 for s in args.seed_list]
        context = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool, \
                raw.open("w") as out:
            futures = [pool.submit(run_unit, t, s, args.strategies, stages_of[t], str(work))
                       for t, s in units]
            for future in cf.as_completed(futures):
                for run in future.result():
                    runs.append(run)
                    out.write(json.dumps(asdict(run)) + "\n")
                    out.flush()
                log(f"{len(runs) // len(args.strategies)}/{len(units)} units done, "
                    f"{(time.perf_counter() - started) / 60:.1f} min")
        meta |= {"finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "load_end": load_average(), "seconds": round(time.perf_counter() - started, 1)}
        raw.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    text = write(args, runs, args.task_list, stages_of, meta)
    print(text)
    if not args.no_write and (args.write or not args.quick):
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
