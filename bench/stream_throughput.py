"""Streaming throughput and memory: our loop on a streamed image folder against a plain
hand-written DataLoader loop over the same items, and the peak memory of streaming
against loading the folder as whole tensors.

The folder is written first: `--images` PNGs (default 3,000) from Fashion-MNIST's
training images (Debian's dataset-fashion-mnist), one subfolder per class, in a
temporary data folder (removed afterwards). `image_folder` reads it streamed: decoded
per item by DataLoader workers (torchvision.io), uint8 until the batch, normalised on the
device.

Throughput. Both loops train the same model (a fresh convnet with the same seed) on the
same items (the streamed dataset's training split) with the same optimizer (AdamW, same
lr and weight decay, per-step cosine), batch size, number of DataLoader workers and
normalisation; the plain loop is `DataLoader(shuffle=True, persistent_workers=True)` and
a bare step. Each run trains one warm-up epoch (worker start-up, discarded), then
`--epochs` timed epochs; runs alternate, ours then plain, for `--rounds` rounds. The table
shows the median samples/s over all timed epochs and the ratio ours/plain (goal: 0.9 or
better). Training time only: our loop's `epoch_seconds` excludes its evaluation.

Memory. Two fresh processes load the folder (at `--rss-image-size`, default 128 px, so
that the whole tensors are large) and train an MLP (small activations: the peak is the
data's) for one epoch on a `subset` of it: one streamed,
one with `stream: false` (every image decoded up front into float32 tensors). Each
reports its peak RSS and the peak PSS of its whole process tree (itself and
its DataLoader workers; PSS counts pages the workers share with it once), sampled by
psutil every 50 ms.

    python bench/stream_throughput.py                   # ~3 minutes on 2 cores
    python bench/stream_throughput.py --rounds 2 --images 2000 --no-write

Threads default to 1 (see bench/train_throughput.py for why). The table and the machine
facts go to bench/results/stream_throughput.md (--no-write to skip).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DataLoader

from stagetune.workers.config import parse_params
from stagetune.workers.data import DATASETS, DataSettings, StreamingDataset, load_dataset, loader_workers
from stagetune.workers.models import build_model
from stagetune.workers.runtime import seed_everything
from stagetune.workers.train import train

RESULTS = Path(__file__).resolve().parent / "results" / "stream_throughput.md"
DEVICE = torch.device("cpu")
FOLDER = "fashion_pngs"


def write_pngs(root: Path, count: int) -> None:
    """`count` Fashion-MNIST training images as PNGs, `root/FOLDER/<class>/<i>.png`."""
    raw = DATASETS.get("fashion_mnist")(settings=DataSettings(data_dir=root))
    pixels = np.rint(raw.x[:count, 0] * 255).astype(np.uint8)
    for c in range(10):
        (root / FOLDER / str(c)).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(pixels, raw.y[:count], strict=True)):
        Image.fromarray(image).save(root / FOLDER / str(int(label)) / f"{i}.png")


def run_ours(data: StreamingDataset, params: dict, epochs: int, seed: int) -> list[float]:
    train_cfg, model_cfg = parse_params(params)
    generator = seed_everything(seed)
    model = build_model("convnet", data, model_cfg)
    outcome = train(model, data, train_cfg, model_cfg, epochs + 1, DEVICE, generator)
    if outcome.status != "completed":
        raise RuntimeError(f"our loop ended {outcome.status}: {outcome.message}")
    return [m["samples_per_second"] for m in outcome.history[1:]]


def run_plain(data: StreamingDataset, params: dict, epochs: int, seed: int,
              workers: int) -> list[float]:
    """A hand-written DataLoader loop: shuffle, persistent workers, normalise, step."""
    train_cfg, model_cfg = parse_params(params)
    generator = seed_everything(seed)
    model = build_model("convnet", data, model_cfg)
    loader = DataLoader(data.train, batch_size=train_cfg.batch_size, shuffle=True,
                        num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=DEVICE.type == "cuda", generator=generator)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train_cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=train_cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer,
                                                           T_max=len(loader) * (epochs + 1))
    mean, std = data.mean.to(DEVICE), data.std.to(DEVICE)
    rates = []
    for epoch in range(epochs + 1):
        model.train()
        started, seen = time.perf_counter(), 0
        for x, y in loader:
            x = (x.to(DEVICE).float() / 255 - mean) / std
            loss = F.cross_entropy(model(x), y.to(DEVICE))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(y)
        if epoch > 0:
            rates.append(seen / (time.perf_counter() - started))
    return rates


def rss_child(mode: str, root: Path, image_size: int, subset: int) -> None:
    """Load the folder streamed or whole, train one epoch on `subset`; print the peaks."""
    torch.set_num_threads(1)
    me, peak = psutil.Process(), {"rss": 0, "pss": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_full_info().pss
                except psutil.Error:  # a worker that just ended
                    pass
            peak["pss"] = max(peak["pss"], total)
            peak["rss"] = max(peak["rss"], me.memory_info().rss)
            time.sleep(0.05)

    floor = me.memory_info().rss  # torch and the rest imported, nothing loaded
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    options = {"path": FOLDER, "image_size": image_size, "stream": mode == "stream",
               "subset": subset, "val_subset": subset // 2}
    started = time.perf_counter()
    data = load_dataset("image_folder", options, settings=DataSettings(data_dir=root))
    # An MLP: its activations are small, so the peak is the data's, not the model's.
    train_cfg, model_cfg = parse_params({"batch_size": 64})
    generator = seed_everything(0)
    model = build_model("mlp", data, model_cfg)
    outcome = train(model, data, train_cfg, model_cfg, 1, DEVICE, generator)
    stop.set()
    watcher.join()
    print(json.dumps({"mode": mode, "status": outcome.status,
                      "seconds": time.perf_counter() - started, "floor_mb": floor / 2**20,
                      "peak_rss_mb": peak["rss"] / 2**20, "peak_tree_pss_mb": peak["pss"] / 2**20}))


def measure_rss(root: Path, args: argparse.Namespace) -> list[dict]:
    out = []
    for mode in ("stream", "whole"):
        done = subprocess.run(
            [sys.executable, __file__, "--rss-child", mode, "--data-dir", str(root),
             "--rss-image-size", str(args.rss_image_size), "--rss-subset", str(args.rss_subset)],
            capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def machine(args: argparse.Namespace, load_at_start: str) -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    return "\n".join([
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- CPU: {cpu}, {os.cpu_count()} logical CPUs; torch threads: {torch.get_num_threads()}",
        f"- torch {torch.__version__}, Python {platform.python_version()}, {platform.platform()}",
        f"- load average (1/5/15 min): {load_at_start} at the start, {load} at the end",
        f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`",
    ])


def report(args: argparse.Namespace, data: StreamingDataset, workers: int, ours: list[list[float]],
           plain: list[list[float]], rss: list[dict], load_at_start: str) -> str:
    o = statistics.median(r for run in ours for r in run)
    p = statistics.median(r for run in plain for r in run)
    # Each round's pair ran back to back, under the same load from other processes.
    per_round = [statistics.median(a) / statistics.median(b) for a, b in zip(ours, plain, strict=True)]
    by_mode = {r["mode"]: r for r in rss}
    s, w = by_mode["stream"], by_mode["whole"]
    whole_mb = args.images * 3 * args.rss_image_size ** 2 * 4 / 2**20
    return "\n".join([
        "# Streaming: our loop vs a plain DataLoader loop, and memory against whole tensors", "",
        f"{args.images:,} PNGs from Fashion-MNIST in an `image_folder` (28 px, read as 3x28x28 "
        f"uint8), {data.train_size:,} training items; convnet defaults, batch "
        f"{args.batch_size}, {workers} DataLoader worker(s) in both loops, CPU.", "",
        "| loop | samples/s (median) |", "|---|---:|",
        f"| ours (workers.train, streamed) | {o:,.0f} |",
        f"| plain DataLoader loop | {p:,.0f} |",
        f"| **ratio ours / plain** | **{o / p:.2f}** (goal >= 0.90) |",
        f"| median of the per-round ratios | {statistics.median(per_round):.2f} |", "",
        f"Per round (ours then plain, {args.epochs} timed epochs each after a warm-up): ours "
        f"{', '.join(f'{statistics.median(r):,.0f}' for r in ours)}; plain "
        f"{', '.join(f'{statistics.median(r):,.0f}' for r in plain)}; ratio "
        f"{', '.join(f'{r:.2f}' for r in per_round)}.", "",
        "Each round's two runs are back to back, so they share the load of other processes; "
        "on a busy machine single rounds scatter (see the load average below) and the "
        "medians are what count. Both loops do the same work per item: one decode and resize "
        "in the worker, one normalisation and one optimizer step per batch.", "",
        f"## Peak memory: load the folder at {args.rss_image_size} px and train one epoch on "
        f"{args.rss_subset} items (an MLP)", "",
        f"Whole tensors of all {args.images:,} images at that size: {whole_mb:,.0f} MiB of float32.", "",
        "| loading | RSS before loading (MiB) | peak RSS, main process (MiB) "
        "| peak PSS, process tree (MiB) | seconds |",
        "|---|---:|---:|---:|---:|",
        *(f"| {label} | {r['floor_mb']:,.0f} | {r['peak_rss_mb']:,.0f} | "
          f"{r['peak_tree_pss_mb']:,.0f} | {r['seconds']:.1f} |"
          for label, r in (("streamed (default)", s), ("whole tensors (`stream: false`)", w))),
        "", "## Machine", "", machine(args, load_at_start), "",
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=3000, help="PNGs to write (default 3000)")
    p.add_argument("--rounds", type=int, default=8, help="ours/plain pairs (default 8)")
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per run (default 1)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rss-image-size", type=int, default=128)
    p.add_argument("--rss-subset", type=int, default=512)
    p.add_argument("--data-dir", type=Path, help="a data folder that holds the PNGs already")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--rss-child", choices=("stream", "whole"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.data_dir, args.rss_image_size, args.rss_subset)
        return
    torch.set_num_threads(args.threads)
    load_at_start = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="stream-bench-"))
    try:
        if not (root / FOLDER).is_dir():
            write_pngs(root, args.images)
        data = load_dataset("image_folder", {"path": FOLDER, "image_size": 28},
                            settings=DataSettings(data_dir=root))
        assert isinstance(data, StreamingDataset)
        workers = loader_workers(data.train_size, DEVICE)
        params = {"batch_size": args.batch_size}
        ours, plain = [], []
        for round_ in range(args.rounds):
            ours.append(run_ours(data, params, args.epochs, round_))
            plain.append(run_plain(data, params, args.epochs, round_, workers))
            print(f"round {round_ + 1}: ours {statistics.median(ours[-1]):,.0f}, plain "
                  f"{statistics.median(plain[-1]):,.0f} samples/s", flush=True)
        rss = measure_rss(root, args)
    finally:
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    text = report(args, data, workers, ours, plain, rss, load_at_start)
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
