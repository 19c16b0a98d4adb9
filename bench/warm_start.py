"""Learning across studies: a study warm-started from an earlier one on the same task
(`warm_start_from`) against a cold one, on the same space, seed and budget.

For each seed s, on one throw-away SQLite store: an earlier study (seed s + 1000) runs
cold; then the cold study (seed s) and the warm one (seed s, `warm_start_from` the
earlier one) run on the same budget. Epochs are counted as bench/search_efficiency.py
counts them (probes by their epoch equivalents, every trial epoch in order), and the
table gives medians over the seeds of the epochs to each target and the best within the
budget. The earlier study's own epochs are not charged to the warm one: it is what the
store already held.

    .venv/bin/python bench/warm_start.py --seeds 5 --budget 60
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))

from bench.search_efficiency import SPACES, Run, count_staged, fmt_epochs, quiet, spec_dict  # noqa: E402


def study(store: Any, name: str, space: str, seed: int, budget: int, epochs: int,
          warm_from: str | None = None) -> Run:
    from stagetune.studies.run.runner import Runner
    from stagetune.studies.spec import load_spec

    cfg = SPACES[space]
    spec = spec_dict(name, cfg, seed) | {
        "name": name, "budget": {"epochs": budget}, "stages": {"refine": {"epochs": epochs}},
        "resources": {"max_concurrent": 1}}
    if warm_from:
        spec["warm_start_from"] = warm_from
    started = time.perf_counter()
    Runner(load_spec(spec), store).run()
    run = Run(space, "warm" if warm_from else "cold", seed, budget=budget,
              seconds=time.perf_counter() - started)
    count_staged(run, store, name)
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="digits_hostile", choices=sorted(SPACES))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=6, help="a full trial (E)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/stagetune-warm-start"))
    args = parser.parse_args(argv)
    quiet()
    from stagetune.studies.store import Store

    args.work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[Run]] = {"cold": [], "warm": []}
    for seed in range(args.seeds):
        store = Store(f"sqlite:///{args.work / f'warm-{seed}-{time.time_ns()}.db'}")
        study(store, f"earlier-{seed}", args.space, seed + 1000, args.budget, args.epochs)
        for kind in ("cold", "warm"):
            run = study(store, f"{kind}-{seed}", args.space, seed, args.budget, args.epochs,
                        f"earlier-{seed}" if kind == "warm" else None)
            runs[kind].append(run)
            print(f"seed {seed} {kind}: best {run.best:.4f}, to targets "
                  f"{[fmt_epochs(run.to_target(t)) for t in SPACES[args.space].targets]}, "
                  f"{run.seconds:.0f} s", flush=True)
    targets = SPACES[args.space].targets
    print(f"\n{args.space}, budget {args.budget} epochs, E {args.epochs}, {args.seeds} seeds "
          "(medians):\n")
    print("| study | " + " | ".join(f"epochs to {t:g}" for t in targets)
          + " | best | reached every target | wall s |")
    print("|---|" + "---:|" * (len(targets) + 3))
    for kind, done in runs.items():
        cells = [fmt_epochs(statistics.median(r.to_target(t) for r in done)) for t in targets]
        every = sum(all(r.to_target(t) < float("inf") for t in targets) for r in done)
        print(f"| {kind} | " + " | ".join(cells)
              + f" | {statistics.median(r.best for r in done):.4f} | {every}/{len(done)} | "
              f"{statistics.median(r.seconds for r in done):.0f} |")


if __name__ == "__main__":
    main()
