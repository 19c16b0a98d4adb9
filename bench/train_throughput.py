"""Training throughput: our loop (workers.train.train) against a plain hand-written loop.

Both loops train the same model (a fresh build with the same seed) on the same
in-memory tensors, with the same optimizer (AdamW, same lr and weight decay), the
same batch size, the same per-step cosine schedule and the same batch order. Only
training epochs are timed (our loop reports `epoch_seconds` per epoch with its
evaluation excluded; the plain loop does not evaluate). Each run trains one warm-up
epoch, which is discarded, then the timed epochs (`--digits-epochs`, `--epochs` for
Fashion-MNIST). Runs alternate, ours then plain, for `--rounds` rounds. The table
shows, for each loop, the median samples/s over all its timed epochs (a burst of
load from another process spoils a few epochs, not the median), and the ratio
ours/plain (goal: 0.9 or better); the per-round figures follow it.

    python bench/train_throughput.py                      # ~3 minutes on 2 cores
    python bench/train_throughput.py --rounds 3 --epochs 1 --fashion-subset 2048

Threads default to 1 (--threads to change): with 2 intra-op threads on 2 cores, any
other busy process stalls OpenMP's barriers and an epoch can run 10-100x slower, so
rounds scatter wildly; one thread is slower but steady, and the loops' fixed per-step
costs, which are what the ratio measures, are the same either way.

The table and the machine facts are also written to bench/results/train_throughput.md
(use --no-write to skip). Fashion-MNIST is extracted from the Debian package into a
temporary folder that is removed afterwards, unless --data-dir names one to reuse.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from stagetune.workers.config import ModelConfig, TrainConfig, parse_params
from stagetune.workers.data import Dataset, DataSettings, load_dataset
from stagetune.workers.models import build_model
from stagetune.workers.runtime import seed_everything
from stagetune.workers.train import evaluate, train

RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.md"
DEVICE = torch.device("cpu")


@dataclass
class Task:
    label: str
    data: Dataset
    epochs: int  # timed epochs per run
    train_cfg: TrainConfig
    model_cfg: ModelConfig
    ours: list[list[float]] = field(default_factory=list)  # samples/s per timed epoch, per round
    plain: list[list[float]] = field(default_factory=list)
    ours_val_loss: float = math.nan  # sanity check: both loops compute the same thing
    plain_val_loss: float = math.nan

    @property
    def params(self) -> int:
        torch.manual_seed(0)
        return sum(p.numel() for p in build_model("convnet", self.data, self.model_cfg).parameters())


def fresh_model(task: Task, seed: int) -> tuple[nn.Module, torch.Generator]:
    """The same initial weights and batch-order generator for both loops."""
    generator = seed_everything(seed)
    return build_model("convnet", task.data, task.model_cfg), generator


def run_ours(task: Task, epochs: int, seed: int) -> list[float]:
    """Samples/s of workers.train.train per timed epoch (the first epoch is a warm-up)."""
    model, generator = fresh_model(task, seed)
    outcome = train(model, task.data, task.train_cfg, task.model_cfg, epochs + 1, DEVICE, generator)
    if outcome.status != "completed" or len(outcome.history) != epochs + 1:
        raise RuntimeError(f"our loop ended {outcome.status}: {outcome.message}")
    task.ours_val_loss = outcome.history[-1]["val_loss"]
    return [m["samples_per_second"] for m in outcome.history[1:]]


def run_plain(task: Task, epochs: int, seed: int) -> list[float]:
    """Samples/s of a plain hand-written loop per timed epoch (the first epoch is a warm-up)."""
    model, generator = fresh_model(task, seed)
    cfg = task.train_cfg
    x, y = task.data.x_train, task.data.y_train
    n, bs = len(x), cfg.batch_size
    steps = n // bs + (1 if n % bs > 1 else 0)  # as ours: no trailing batch of one (batch norm)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ], lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps * (epochs + 1))
    rates = []
    for epoch in range(epochs + 1):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        for step in range(steps):
            idx = order[step * bs:(step + 1) * bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        elapsed = time.perf_counter() - started
        if epoch > 0:
            rates.append(min(steps * bs, n) / elapsed)
    task.plain_val_loss = evaluate(model, task.data, task.data.x_val, task.data.y_val)["val_loss"]
    return rates


def build_tasks(args: argparse.Namespace, settings: DataSettings) -> list[Task]:
    train_cfg, model_cfg = parse_params({"batch_size": args.batch_size})
    tasks = []
    if "digits" in args.tasks:
        tasks.append(Task("digits convnet", load_dataset("digits", settings=settings),
                          args.digits_epochs, train_cfg, model_cfg))
    if "fashion_mnist" in args.tasks:
        options = {"subset": args.fashion_subset, "val_subset": args.fashion_val_subset}
        data = load_dataset("fashion_mnist", options, settings=settings)
        tasks.append(Task(f"fashion_mnist convnet (subset {len(data.x_train)})", data,
                          args.epochs, train_cfg, model_cfg))
    return tasks


def table(tasks: list[Task]) -> str:
    rows = [
        "| task | model params | batch | ours samples/s | plain samples/s | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for t in tasks:
        ours, plain = median_rate(t.ours), median_rate(t.plain)
        rows.append(f"| {t.label} | {t.params:,} | {t.train_cfg.batch_size} | {ours:,.0f} | "
                    f"{plain:,.0f} | {ours / plain:.2f} |")
    return "\n".join(rows)


def median_rate(rounds: list[list[float]]) -> float:
    return statistics.median(r for epochs in rounds for r in epochs)


def details(tasks: list[Task]) -> str:
    lines = []
    for t in tasks:
        ours = [statistics.median(r) for r in t.ours]
        plain = [statistics.median(r) for r in t.plain]
        ratios = [o / p for o, p in zip(ours, plain, strict=True)]
        lines.append(
            f"- {t.label} ({t.epochs} timed epochs per run), median samples/s per round: "
            f"ours {', '.join(f'{v:,.0f}' for v in ours)}; "
            f"plain {', '.join(f'{v:,.0f}' for v in plain)}; "
            f"ratio {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}); "
            f"final val loss ours {t.ours_val_loss:.5f}, plain {t.plain_val_loss:.5f}"
        )
    return "\n".join(lines)


def load_average() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def machine(args: argparse.Namespace, load_at_start: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return "\n".join([
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- CPU: {cpu}, {os.cpu_count()} logical CPUs; torch threads: {torch.get_num_threads()}",
        f"- torch {torch.__version__}, Python {platform.python_version()}, {platform.platform()}",
        f"- load average (1/5/15 min): {load_at_start} at the start, {load_average()} at the end",
        f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`",
        f"- rounds: {args.rounds} (ours then plain, alternating); timed epochs per run: "
        f"digits {args.digits_epochs}, Fashion-MNIST {args.epochs}, each after 1 discarded "
        f"warm-up epoch; config: convnet defaults (depth 2, width 32, batch norm), AdamW "
        f"lr 3e-3, weight decay 1e-4, per-step cosine, no grad_clip",
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="ours/plain pairs (default 7)")
    p.add_argument("--epochs", type=int, default=2,
                   help="Fashion-MNIST timed epochs per run, after one discarded warm-up "
                        "epoch (default 2)")
    p.add_argument("--digits-epochs", type=int, default=15,
                   help="digits timed epochs per run (default 15: a digits epoch is ~0.1 s)")
    p.add_argument("--fashion-subset", type=int, default=3072,
                   help="Fashion-MNIST training samples (default 3072)")
    p.add_argument("--fashion-val-subset", type=int, default=512,
                   help="Fashion-MNIST validation samples (default 512; ours evaluates them, untimed)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size of both loops (default 64)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (default 1: steady on a shared machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", nargs="+", default=["digits", "fashion_mnist"],
                   choices=["digits", "fashion_mnist"])
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where Fashion-MNIST is extracted (default: a temporary folder)")
    p.add_argument("--output", type=Path, default=RESULTS, help="markdown file to write")
    p.add_argument("--no-write", action="store_true", help="print only; write no file")
    args = p.parse_args(argv)
    if min(args.rounds, args.epochs, args.digits_epochs) < 1:
        p.error("--rounds, --epochs and --digits-epochs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_at_start = load_average()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `timeout` still cleans up
    temp = None if args.data_dir else Path(tempfile.mkdtemp(prefix="stagetune-bench-"))
    started = time.perf_counter()
    try:
        tasks = build_tasks(args, DataSettings(data_dir=args.data_dir or temp))
        for task in tasks:
            print(f"{task.data.describe()}", flush=True)
            for r in range(1, args.rounds + 1):
                task.ours.append(run_ours(task, task.epochs, args.seed))
                task.plain.append(run_plain(task, task.epochs, args.seed))
                print(f"  round {r}: ours {statistics.median(task.ours[-1]):,.0f}/s, "
                      f"plain {statistics.median(task.plain[-1]):,.0f}/s", flush=True)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    result = table(tasks)
    print()
    print(result)
    print()
    print(details(tasks))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(
            "# Training throughput: our loop vs a plain PyTorch loop\n\n"
            f"{result}\n\nsamples/s: median over all timed epochs of all rounds (training "
            "time only); ratio = ours / plain (goal >= 0.90). Equal final validation losses "
            "below show both loops did the same computation.\n\n"
            f"## Per round\n\n{details(tasks)}\n\n## Machine\n\n{machine(args, load_at_start)}\n"
        )
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
