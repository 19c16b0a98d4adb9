"""Diagnosis-based pruning against accuracy-only pruning, on the hostile spaces of
bench/search_efficiency.py (same spaces, budgets, training function and epoch counting).

Diagnosis-based pruning stops a trial as hopeless on its own signals: the worker reads its
vital signs once, within the first epoch (`workers.vitals`: a loss that has not moved,
vanishing or exploding gradients, dead units), and a first epoch at chance level stops it
at once. Accuracy-only pruning waits for rungs of validation scores.

1. Search: for each hostile space and seed, four strategies on the same budget of epochs:
   - stagetune: the staged study as shipped (coarse and refine diagnose);
   - stagetune_accuracy_only: the same study with `diagnose: false` in coarse and refine
     (ASHA's rungs only);
   - tpe_hyperband: Optuna's TPE with HyperbandPruner, as in search_efficiency.py;
   - tpe_hyperband_vitals: the same with diagnosis-based pruning.
   The report gives, as medians over the seeds, the epochs spent until an epoch first
   reached each target, the best val_accuracy, and how many trials were stopped as hopeless.
2. Overhead on healthy trials: N configurations drawn at random from each space (easy
   included), each trained for a full trial twice from the same seed, without and with
   diagnosis. A healthy trial is one whose full run reached the space's lower target; a
   false stop is a healthy trial stopped as hopeless. The wall-time overhead compares the
   two runs of every trial that was not stopped (same seed, same epochs).

    python bench/diagnosis_pruning.py --quick --no-write   # smoke test, ~2 min
    python bench/diagnosis_pruning.py --jobs 2             # the full run (~40 min on 2 cores)

Epochs are counted as in search_efficiency.py, plus the share of an epoch a trial ran
before its vital signs stopped it. The report goes to bench/results/diagnosis_pruning.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import math
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna
import search_efficiency as eff
import torch

from stagetune.studies.search.stages._chance import learning
from stagetune.studies.spec import load_spec
from stagetune.studies.spec.space import to_distributions
from stagetune.workers import StagetuneError, TrialRequest, execute
from stagetune.workers.data import load_dataset

RESULTS = Path(__file__).resolve().parent / "results" / "diagnosis_pruning.md"
HOSTILE = ("digits_hostile", "fashion_hostile")
STRATEGIES = ("stagetune", "stagetune_accuracy_only", "tpe_hyperband", "tpe_hyperband_vitals")
PAIRS = (("stagetune", "stagetune_accuracy_only"), ("tpe_hyperband_vitals", "tpe_hyperband"))


def search_unit(space: str, seed: int, strategies: tuple[str, ...], work: str,
                quick: bool) -> list[eff.Run]:
    torch.set_num_threads(1)
    eff.quiet()
    cfg = eff.configs_for([space], quick)[space]
    runs = []
    for strategy in strategies:
        if strategy.startswith("stagetune"):
            run = eff.run_staged(space, cfg, seed, Path(work), diagnose=strategy == "stagetune",
                                 strategy=strategy)
        else:
            run = eff.run_peer(space, cfg, "tpe_hyperband", seed,
                               vitals=strategy.endswith("_vitals"))
        runs.append(run)
        eff.log(f"{space} seed {seed}: {strategy} best {run.best:.4f}, {eff.reached(run)}, "
                f"{run.trials} trials, {run.spent:.1f}/{run.budget:g} epochs, {run.seconds:.0f} s")
    return runs


def overhead_unit(space: str, n: int, quick: bool) -> list[dict[str, Any]]:
    """`n` random configurations of `space`, each trained without and with diagnosis."""
    torch.set_num_threads(1)
    eff.quiet()
    cfg = eff.configs_for([space], quick)[space]
    distributions = to_distributions(load_spec(eff.spec_dict(space, cfg, 0)).space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1234))
    load_dataset(cfg.dataset, cfg.dataset_options)  # loaded before any run is timed
    rows = []
    for i in range(n):
        params = {**cfg.fixed, **study.ask(distributions).params}
        row: dict[str, Any] = {"space": space, "params": params}
        for vitals in ((False, True) if i % 2 else (True, False)):  # either may run first
            values: list[float] = []

            def report(epoch: int, metrics: dict[str, float], vitals: bool = vitals,
                       values: list[float] = values) -> bool:
                values.append(metrics["val_accuracy"])
                return vitals and epoch == 1 and values[0] <= cfg.chance and not learning(metrics)

            request = TrialRequest(cfg.task(), params=params, epochs=cfg.epochs, seed=i,
                                   vitals=vitals)
            started = time.perf_counter()
            try:
                result = execute(request, report)
            except StagetuneError as exc:
                row["error"] = str(exc)
                break
            key = "watched" if vitals else "full"
            stopped = vitals and (result.status == "hopeless" or result.status == "stopped")
            row[key] = {"status": "hopeless" if stopped else result.status,
                        "epochs": len(values) + result.partial + (result.status == "diverged"),
                        "best": max(values, default=math.nan),
                        "seconds": time.perf_counter() - started,
                        "why": result.message if result.status == "hopeless" else
                        ("first epoch at chance level, loss fell under 10%" if stopped else "")}
        rows.append(row)
        eff.log(f"{space} config {i}: {row.get('full', {}).get('best', math.nan):.3f} -> "
                f"{row.get('watched', {}).get('status')}")
    return rows


# -- report ------------------------------------------------------------------------------


def search_table(runs: list[eff.Run], spaces: list[str]) -> tuple[str, list[str]]:
    lines = ["| space | strategy | seeds | trials | stopped as hopeless | best val_accuracy | "
             "epochs to lower target (missed) | epochs to higher target (missed) | wall s |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    goals = []
    for space in spaces:
        targets = eff.SPACES[space].targets
        summ = {}
        for strategy in STRATEGIES:
            mine = [r for r in runs if r.space == space and r.strategy == strategy]
            if not mine:
                continue
            reach = {t: [r.to_target(t) for r in mine] for t in targets}
            hopeless = sum(t["status"] == "hopeless" for r in mine for t in r.trial_log)
            summ[strategy] = {t: eff.median(v) for t, v in reach.items()}
            lines.append(
                f"| {space} | {strategy} | {len(mine)} | {eff.median([r.trials for r in mine]):.0f} "
                f"| {hopeless} | {eff.median([eff.score(r.best) for r in mine]):.4f} | "
                + " | ".join(f"{t:g}: {eff.fmt_epochs(eff.median(v))} "
                             f"({sum(math.isinf(x) for x in v)}/{len(v)})" for t, v in reach.items())
                + f" | {eff.median([r.seconds for r in mine]):.0f} |")
        for diag, acc in PAIRS:
            if diag in summ and acc in summ:
                for t in targets:
                    a, d = summ[acc][t], summ[diag][t]
                    cut = (1 - d / a) if math.isfinite(a) and math.isfinite(d) else math.nan
                    goals.append(f"- {space}: {diag} vs {acc}, epochs to {t:g}: "
                                 f"{eff.fmt_epochs(d)} vs {eff.fmt_epochs(a)} "
                                 f"({'n/a' if math.isnan(cut) else f'{cut:+.0%} fewer'}); "
                                 f"goal at least 50% fewer: {eff.yes(cut >= 0.5)}")
    return "\n".join(lines), goals


def overhead_table(rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    lines = ["| space | configs | stopped as hopeless | of them healthy (false stops) | "
             "healthy configs | epochs, full runs | epochs, with diagnosis | "
             "wall-time overhead on trials not stopped |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    goals = []
    for space in dict.fromkeys(r["space"] for r in rows):
        mine = [r for r in rows if r["space"] == space and "watched" in r]
        target = eff.SPACES[space].targets[0]
        stopped = [r for r in mine if r["watched"]["status"] == "hopeless"]
        healthy = [r for r in mine if r["full"]["best"] >= target]
        false = [r for r in stopped if r["full"]["best"] >= target]
        kept = [r for r in mine if r["watched"]["status"] != "hopeless"]
        full_s = sum(r["full"]["seconds"] for r in kept)
        watched_s = sum(r["watched"]["seconds"] for r in kept)
        overhead = watched_s / full_s - 1 if full_s else math.nan
        lines.append(f"| {space} | {len(mine)} | {len(stopped)} | {len(false)} | {len(healthy)} | "
                     f"{sum(r['full']['epochs'] for r in mine):.1f} | "
                     f"{sum(r['watched']['epochs'] for r in mine):.1f} | {overhead:+.1%} |")
        goals.append(f"- {space}: overhead on trials not stopped {overhead:+.1%}, "
                     f"goal at most 5%: {eff.yes(overhead <= 0.05)}; false stops "
                     f"{len(false)}/{len(healthy)} healthy configs")
    return "\n".join(lines), goals


def stop_reasons(rows: list[dict[str, Any]]) -> str:
    """The sentences trials were stopped with, one example per space and kind."""
    seen: dict[tuple[str, str], str] = {}
    for r in rows:
        watched = r.get("watched", {})
        if watched.get("status") != "hopeless":
            continue
        why = watched["why"]
        kind = why.split(";")[-1].split(":")[0].strip() if ";" in why else why
        seen.setdefault((r["space"], kind), f"{why} (full run's best {r['full']['best']:.3f})")
    return "\n".join(f"- {space}: {text}" for (space, _), text in seen.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--configs", type=int, default=40, help="per space, for the overhead part")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, 1 seed, 6 configs")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args(argv)
    seeds = 1 if args.quick else args.seeds
    n = 6 if args.quick else args.configs
    started, meta = time.perf_counter(), eff.start_meta(args)
    work = tempfile.mkdtemp(prefix="diagnosis-bench-")
    runs: list[eff.Run] = []
    rows: list[dict[str, Any]] = []
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        overheads = [pool.submit(overhead_unit, space, n, args.quick)
                     for space in ("easy", *HOSTILE)]
        searches = [] if args.skip_search else [
            pool.submit(search_unit, space, seed, STRATEGIES, work, args.quick)
            for seed in range(seeds) for space in HOSTILE]
        for future in searches:
            runs += future.result()
        for future in overheads:
            rows += future.result()
    meta |= {"finished": eff.dt.datetime.now().astimezone().isoformat(timespec="seconds"),
             "seconds": time.perf_counter() - started, "load_end": eff.load_average()}
    search, search_goals = search_table(runs, list(HOSTILE))
    overhead, overhead_goals = overhead_table(rows)
    text = "\n".join([
        "# Diagnosis-based pruning against accuracy-only pruning", "",
        f"{seeds} seed(s), {n} configurations per space.", "", eff.machine(meta),
        "", "## Search: epochs to target at equal budgets", "", search, "",
        "Medians over the seeds. *stopped as hopeless*: trials stopped on their vital signs "
        "or at chance level after their first epoch, over all seeds.", "",
        "## Overhead on healthy trials", "", overhead, "",
        "Each configuration trained twice from the same seed for a full trial, without and "
        "with diagnosis. *healthy*: its full run reached the space's lower target.", "",
        "## Goals", "", *search_goals, *overhead_goals, "",
        "## Why trials were stopped (one example per space and sign)", "",
        stop_reasons(rows), ""])
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
