"""GPU smoke check, under 5 minutes on one GPU: the streaming loop on the GPU, and a real
small study on a local Ray with `gpus_per_trial` 1 and then 0.25 (four trials share the
GPU), reporting trials per hour and the peak GPU memory of each trial.

Data: `--images` PNGs (default 3,000) from Fashion-MNIST (Debian's dataset-fashion-mnist)
in a temporary data folder, read by `image_folder` streamed (DataLoader workers decode,
pinned memory, normalised on the GPU). Each study is a convnet with probes off, a coarse
stage of `--trials` quasi-random trials of up to 2 epochs, refine and confirm off, on a
SQLite store in the same temporary folder. Peak GPU memory per trial comes from the
`peak_gpu_memory_mb` each epoch reports on CUDA (torch.cuda.max_memory_allocated, reset
per trial).

    python bench/gpu_smoke.py                 # exits 2 with a message where there is no GPU
    python bench/gpu_smoke.py --trials 8 --out bench/results/gpu_smoke.md

Prints a Markdown table (and writes it to --out when given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from stream_throughput import FOLDER, write_pngs  # noqa: E402

NO_GPU = ("gpu_smoke: no CUDA GPU here (torch.cuda.is_available() is False), so nothing was "
          "measured; run it on a machine with a GPU (torch {torch}, CUDA build {cuda}).")


def require_gpu() -> None:
    if not torch.cuda.is_available():
        print(NO_GPU.format(torch=torch.__version__, cuda=torch.version.cuda), file=sys.stderr)
        raise SystemExit(2)


def streaming_loop(images: int) -> dict[str, Any]:
    """Two epochs of the built-in loop on the GPU, streamed."""
    from stagetune.workers import Task, TrialRequest, execute

    task = Task("image_folder", "convnet", dataset_options={"path": FOLDER, "image_size": 28})
    started = time.perf_counter()
    result = execute(TrialRequest(task, params={"batch_size": 128}, epochs=2, device="cuda"))
    if result.status != "completed":
        raise SystemExit(f"gpu_smoke: the streaming loop ended {result.status}: {result.message}")
    last = result.history[-1]
    return {"images": images, "seconds": time.perf_counter() - started,
            "samples_per_second": last["samples_per_second"],
            "val_accuracy": last["val_accuracy"],
            "peak_gpu_memory_mb": result.final.get("peak_gpu_memory_mb", float("nan"))}


def spec(name: str, gpus: float, trials: int) -> dict[str, Any]:
    off = {"enabled": False}
    return {"name": name, "seed": 0,
            "task": {"dataset": "image_folder", "model": "convnet",
                     "dataset_options": {"path": FOLDER, "image_size": 28}},
            "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                      "width": {"type": "int", "low": 16, "high": 64, "log": True}},
            "fixed": {"batch_size": 128},
            "stages": {"baseline": off, "init_check": off, "overfit": off, "lr_probe": off,
                       "coarse": {"trials": trials, "epochs": 2}, "refine": off,
                       "confirm": off},
            "resources": {"gpus_per_trial": gpus, "cpus_per_trial": 1,
                          "max_concurrent": max(1, round(1 / gpus))}}


def run_study(store_url: str, gpus: float, trials: int) -> dict[str, Any]:
    from stagetune.studies.runner_actor import start_runner, stop_runner, wait_for
    from stagetune.studies.spec import load_spec
    from stagetune.studies.stages import ORDER
    from stagetune.studies.store import Store

    parsed = load_spec(spec(f"gpu-smoke-{str(gpus).replace('.', '_')}", gpus, trials))
    store = Store(store_url)
    store.open_study(parsed.name, parsed.model_dump(mode="json"), list(ORDER))
    started = time.perf_counter()
    actor = start_runner(parsed.name, store_url)
    report = wait_for(actor)
    stop_runner(actor)
    wall = time.perf_counter() - started
    ran = store.trials(parsed.name, "coarse")
    done = [t for t in ran if t.user_attrs.get("status") in ("completed", "stopped")]
    curves = store.curves(parsed.name, "coarse")
    peaks = [max(m.get("peak_gpu_memory_mb", 0.0) for m in c) for c in curves.values() if c]
    return {"gpus_per_trial": gpus, "status": report["status"], "message": report["message"],
            "trials": len(ran), "finished": len(done), "wall_s": wall,
            "trials_per_hour": 3600 * len(done) / wall,
            "peak_mb_median": statistics.median(peaks) if peaks else float("nan"),
            "peak_mb_max": max(peaks, default=float("nan")),
            "best": (report.get("best") or {}).get("value")}


def table(loop: dict[str, Any], studies: list[dict[str, Any]], args: argparse.Namespace) -> str:
    gpu = torch.cuda.get_device_name(0)
    lines = [
        "# GPU smoke check", "",
        f"{gpu}; {loop['images']:,} Fashion-MNIST PNGs streamed through `image_folder`.", "",
        "| check | result |", "|---|---|",
        f"| streaming loop, 2 epochs | {loop['samples_per_second']:,.0f} samples/s, val_accuracy "
        f"{loop['val_accuracy']:.3f}, peak GPU memory {loop['peak_gpu_memory_mb']:,.0f} MiB, "
        f"{loop['seconds']:.0f} s |", "",
        "| gpus_per_trial | study | trials finished | wall s | trials/hour "
        "| peak GPU MiB per trial (median / max) | best val_accuracy |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for s in studies:
        best = f"{s['best']:.3f}" if s["best"] is not None else "-"
        lines.append(f"| {s['gpus_per_trial']:g} | {s['status']} | {s['finished']}/{s['trials']} | "
                     f"{s['wall_s']:.0f} | {s['trials_per_hour']:,.0f} | "
                     f"{s['peak_mb_median']:,.0f} / {s['peak_mb_max']:,.0f} | {best} |")
    lines += ["", f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
              f"- torch {torch.__version__} (CUDA {torch.version.cuda}), {os.cpu_count()} CPUs, "
              f"{platform.platform()}",
              f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--trials", type=int, default=8, help="coarse trials per study (default 8)")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args()
    require_gpu()

    import ray

    from stagetune.studies.cluster import NAMESPACE

    root = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    try:
        # Ray's workers inherit the data folder from this process.
        os.environ["STAGETUNE_DATA_DIR"] = str(root)
        from stagetune.workers.data import get_data_settings

        get_data_settings.cache_clear()
        write_pngs(root, args.images)
        loop = streaming_loop(args.images)
        ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=1, namespace=NAMESPACE,
                 include_dashboard=False, log_to_driver=False)
        try:
            store_url = f"sqlite:///{root / 'store.db'}"
            studies = [run_study(store_url, gpus, args.trials) for gpus in (1.0, 0.25)]
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = table(loop, studies, args)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
