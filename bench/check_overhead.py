"""The cost of the checks issue 23 added, on a healthy study: label quality and the
augmentation check (data_check, seconds), and the init check's training-step invariants
and standard-init reference (epoch equivalents and seconds). Goal: at most 3% of the
study's epochs and of its wall time.

Each healthy study (examples/digits.yaml under its budget, and the same with
`augment: crop+cutout` fixed, so that the augmentation check runs) is run whole, in this
process, as bench/planted_bugs.py runs it. The new checks are then timed on their own, on
the same data and model, the way the stages call them.

    python bench/check_overhead.py              # budgets 60 and 150; writes the results
    python bench/check_overhead.py --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import planted_bugs  # noqa: E402  (the study runner, and the planted plugins registered)

from stagetune.workers.augment_check import augmentation_check  # noqa: E402
from stagetune.workers.data import load_dataset  # noqa: E402
from stagetune.workers.data_check import MAX_SAMPLES  # noqa: E402
from stagetune.workers.label_quality import label_quality  # noqa: E402
from stagetune.workers.losses import loss_fn  # noqa: E402
from stagetune.workers.probes._common import prepare  # noqa: E402
from stagetune.workers.probes._loop_step import loop_step  # noqa: E402
from stagetune.workers.probes._reference import reference_scales  # noqa: E402
from stagetune.workers.probes._step_findings import check_step  # noqa: E402
from stagetune.workers.probes._step_invariants import cost as step_cost  # noqa: E402
from stagetune.workers.request import Task, TrialRequest  # noqa: E402

RESULTS = HERE / "results" / "check_overhead.md"
GOAL = 0.03
CASES = {"healthy": planted_bugs.HEALTHY, "augmented": planted_bugs.BUGS["augmented"]}


def new_checks(augmentations: list[str]) -> dict[str, float]:
    """Seconds and epoch equivalents of the new checks on digits and the example's convnet."""
    data = load_dataset("digits", {})
    x_t, y_t = data.sample("train", MAX_SAMPLES)
    started = time.perf_counter()
    label_quality(data.task, data.num_classes, x_t, y_t)
    label_seconds = time.perf_counter() - started
    started = time.perf_counter()
    augmentation_check(data, augmentations)
    augment_seconds = time.perf_counter() - started
    request = TrialRequest(task=Task("digits", "convnet"), mode="init_check")
    setup = prepare(request)
    x, y = data.sample("train", 4 * setup.train.batch_size, setup.generator)
    criterion = loss_fn(data)
    started = time.perf_counter()
    with loop_step(setup, request) as target:
        check_step(target, x, y)
    reference_scales(setup.model, x[:setup.train.batch_size], y[:setup.train.batch_size],
                     criterion)
    probe_seconds = time.perf_counter() - started
    samples = step_cost(len(x)) + min(len(x), setup.train.batch_size)
    return {"seconds": label_seconds + augment_seconds + probe_seconds,
            "label_seconds": label_seconds, "augment_seconds": augment_seconds,
            "probe_seconds": probe_seconds, "epochs": samples / data.train_size}


def measure(budgets: list[int]) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="overhead-") as folder:
        for budget in budgets:
            for name, bug in CASES.items():
                started = time.perf_counter()
                report = planted_bugs.run_study(bug, budget, Path(folder))
                wall = time.perf_counter() - started
                augmentations = [a for a in str(bug.fixed.get("augment", "")).split("+") if a]
                cost = new_checks(augmentations)
                rows.append({"budget": budget, "study": name, "status": report.status,
                             "epochs": report.compute.get("epochs", 0.0), "seconds": wall,
                             **{f"new_{k}": v for k, v in cost.items()}})
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    lines = ["# The new checks' overhead on a healthy study", "",
             "| budget | study | status | epochs | new checks' epochs | share | seconds | "
             "new checks' seconds (labels + augmentations + step and reference) | share |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        e_share, s_share = r["new_epochs"] / r["epochs"], r["new_seconds"] / r["seconds"]
        lines.append(
            f"| {r['budget']} | {r['study']} | {r['status']} | {r['epochs']:.1f} | "
            f"{r['new_epochs']:.3f} | {e_share:.2%}{'' if e_share <= GOAL else ' ✗'} | "
            f"{r['seconds']:.1f} | {r['new_seconds']:.2f} ({r['new_label_seconds']:.2f} + "
            f"{r['new_augment_seconds']:.2f} + {r['new_probe_seconds']:.2f}) | "
            f"{s_share:.2%}{'' if s_share <= GOAL else ' ✗'} |")
    lines += ["", __doc__.split("\n\n")[0].replace("\n", " "), "",
              f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, one thread, "
              "`python bench/check_overhead.py`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="60,150")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    planted_bugs.quiet()
    text = render(measure([int(b) for b in args.budgets.split(",")]))
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
