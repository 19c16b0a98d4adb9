"""GPU smoke check, under 5 minutes on one GPU: the streaming loop on the GPU, and a real
small study on a local Ray with `gpus_per_trial` 1 and then 0.25 (four trials share the
GPU), reporting trials per hour at 1 and at 4 trials per GPU, how many trials ran at once,
the device they ran on, and the peak GPU memory of each trial.

Data: `--images` PNGs (default 3,000) from Fashion-MNIST (Debian's dataset-fashion-mnist)
in a temporary data folder, read by `image_folder` streamed (DataLoader workers decode,
pinned memory, normalised on the GPU). Each study is a convnet with every probe off and a
refine stage of `--trials` TPE trials of `--epochs` epochs each with no pruner and no
vital-sign stops, so that every trial trains the same epochs at both sharings (ASHA's cuts
would depend on the order concurrent trials report in), on a SQLite store in the same
temporary folder. Trials per hour count the trials over the span from the first trial's
start to the last one's end (each trial's `worker` attribute), not the runner's start-up.
Peak GPU memory per trial is the largest `peak_gpu_memory_mb` its epochs report
(torch.cuda.max_memory_allocated in its worker, reset per trial: tensors only, not the
CUDA context of some hundreds of MiB each worker process holds besides).

    python bench/gpu_smoke.py                 # exits 2 with why where no GPU can be used
    python bench/gpu_smoke.py --trials 8 --out bench/results/gpu_smoke.md

Prints a Markdown table (and writes it to --out when given); exits 1 when a check fails:
a trial that did not run on CUDA, a study that did not complete, fewer than four trials
at once at 0.25, a trial without a peak memory.
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

# first: workers.train imported on its own (as stream_throughput does) meets its import
# cycle through workers.vitals and workers.probes; the entry point imports them in order
from stagetune.workers.execute import execute  # noqa: E402

# isort: split
from stream_throughput import FOLDER, write_pngs  # noqa: E402

SHARINGS = (1.0, 0.25)  # gpus_per_trial: one trial per GPU, then four


def require_gpu() -> None:
    """Exit 2, saying why in the words a trial would fail with, where torch cannot use a GPU."""
    from stagetune.workers.gpu_check import GpuUnavailableError, require_cuda

    try:
        require_cuda()
    except GpuUnavailableError as exc:
        print(f"gpu_smoke: nothing was measured. {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def streaming_loop(images: int) -> dict[str, Any]:
    """Two epochs of the built-in loop on the GPU, streamed."""
    from stagetune.workers import Task, TrialRequest

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


def spec(name: str, gpus: float, trials: int, epochs: int) -> dict[str, Any]:
    off = {"enabled": False}
    return {"name": name, "seed": 0,
            "task": {"dataset": "image_folder", "model": "convnet",
                     "dataset_options": {"path": FOLDER, "image_size": 28},
                     "objective": "val_accuracy"},
            "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                      "width": {"type": "int", "low": 16, "high": 64, "log": True}},
            "fixed": {"batch_size": 128},
            "stages": {"data_check": off, "baseline": off, "init_check": off, "overfit": off,
                       "lr_probe": off, "coarse": off,
                       "refine": {"trials": trials, "epochs": epochs, "pruner": "none",
                                  "diagnose": False, "warm_start": 0},
                       "confirm": off},
            "resources": {"gpus_per_trial": gpus, "cpus_per_trial": 1,
                          "max_concurrent": max(1, round(1 / gpus))}}


def run_study(store_url: str, gpus: float, trials: int, epochs: int) -> dict[str, Any]:
    from stagetune.studies.run.runner_actor import start_runner, stop_runner, wait_for
    from stagetune.studies.search.stages import ORDER
    from stagetune.studies.spec import load_spec
    from stagetune.studies.store import Store

    parsed = load_spec(spec(f"gpu-smoke-{str(gpus).replace('.', '_')}", gpus, trials, epochs))
    store = Store(store_url)
    store.open_study(parsed.name, parsed.model_dump(mode="json"), list(ORDER))
    started = time.perf_counter()
    actor = start_runner(parsed.name, store_url)
    report = wait_for(actor)
    stop_runner(actor)
    wall = time.perf_counter() - started
    ran = store.trials(parsed.name, "refine")
    done = [t for t in ran if t.user_attrs.get("status") in ("completed", "stopped")]
    failures = [str(t.user_attrs.get("message", "")) for t in ran
                if t.user_attrs.get("status") == "failed"]
    workers = [t.user_attrs["worker"] for t in done if "worker" in t.user_attrs]
    spans = [(w["started_at"], w["finished_at"]) for w in workers]
    span = max(e for _, e in spans) - min(s for s, _ in spans) if spans else float("nan")
    curves = store.curves(parsed.name, "refine")
    peaks = [max(found) for t in done if (found := [m["peak_gpu_memory_mb"] for m in
                                                     curves.get(t.number, [])
                                                     if "peak_gpu_memory_mb" in m])]
    return {"gpus_per_trial": gpus, "status": report["status"], "message": report["message"],
            "trials": len(ran), "finished": len(done), "wall_s": wall, "span_s": span,
            "trials_per_hour": 3600 * len(done) / span if spans else 0.0,
            "at_once": max_overlap(spans), "devices": sorted({w["device"] for w in workers}),
            "peaks_mb": peaks, "first_failure": failures[0] if failures else "",
            "best": (report.get("best") or {}).get("value")}


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at a tie)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def checks(studies: list[dict[str, Any]], epochs: int) -> list[str]:
    """What the run failed to show; empty when it showed everything it measures."""
    failed = []
    for s in studies:
        label = f"gpus_per_trial {s['gpus_per_trial']:g}"
        if s["status"] != "completed" or s["finished"] < s["trials"] or not s["trials"]:
            failed.append(f"{label}: {s['finished']}/{s['trials']} trials finished, the study "
                          f"{s['status']} ({s['message'] or s['first_failure'] or 'no message'})")
        if s["devices"] and s["devices"] != ["cuda"]:
            failed.append(f"{label}: trials ran on {', '.join(s['devices'])}, not only cuda")
        wanted = max(1, round(1 / s["gpus_per_trial"]))
        if s["finished"] and s["at_once"] < wanted:
            failed.append(f"{label}: at most {s['at_once']} trials ran at once, not {wanted} "
                          f"({os.cpu_count()} CPUs for cpus_per_trial 1)")
        if len(s["peaks_mb"]) < s["finished"]:
            failed.append(f"{label}: a trial reported no peak_gpu_memory_mb in its {epochs} "
                          "epochs")
    return failed


def table(loop: dict[str, Any], studies: list[dict[str, Any]], failed: list[str]) -> str:
    gpu = torch.cuda.get_device_name(0)
    one = next((s["trials_per_hour"] for s in studies if s["gpus_per_trial"] == 1.0), 0.0)
    lines = [
        "# GPU smoke check", "",
        f"{gpu}; {loop['images']:,} Fashion-MNIST PNGs streamed through `image_folder`.", "",
        "| check | result |", "|---|---|",
        f"| streaming loop, 2 epochs | {loop['samples_per_second']:,.0f} samples/s, val_accuracy "
        f"{loop['val_accuracy']:.3f}, peak GPU memory {loop['peak_gpu_memory_mb']:,.0f} MiB, "
        f"{loop['seconds']:.0f} s |", "",
        "| gpus_per_trial | trials per GPU | ran at once | device | study | trials finished "
        "| trials' span s | trials/hour | vs 1 per GPU | peak GPU MiB per trial (min / median "
        "/ max) | best val_accuracy |",
        "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in studies:
        best = f"{s['best']:.3f}" if s["best"] is not None else "-"
        peaks = s["peaks_mb"]
        memory = (f"{min(peaks):,.0f} / {statistics.median(peaks):,.0f} / {max(peaks):,.0f}"
                  if peaks else "-")
        ran = s["finished"] > 0
        span = f"{s['span_s']:.0f}" if ran else "-"
        ratio = f"{s['trials_per_hour'] / one:.2f}x" if ran and one else "-"
        lines.append(
            f"| {s['gpus_per_trial']:g} | {max(1, round(1 / s['gpus_per_trial']))} | "
            f"{s['at_once']} | {', '.join(s['devices']) or '-'} | {s['status']} | "
            f"{s['finished']}/{s['trials']} | {span} | {s['trials_per_hour']:,.0f} | {ratio} | "
            f"{memory} | {best} |")
    lines += [""]
    lines += [f"- FAILED: {line}" for line in failed] or ["- every check passed: all trials on "
                                                         "cuda, four at once at 0.25, a peak "
                                                         "per trial"]
    lines += [f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
              f"- torch {torch.__version__} (CUDA {torch.version.cuda}), {os.cpu_count()} CPUs, "
              f"{platform.platform()}",
              f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--trials", type=int, default=8,
                   help="trials per study, at least 4 (default 8; a multiple of 4 keeps "
                        "the four GPU slots busy)")
    p.add_argument("--epochs", type=int, default=2, help="epochs every trial trains (default 2)")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args()
    if args.trials < 4 or args.epochs < 1:
        p.error("--trials must be at least 4 (four run at once) and --epochs at least 1")
    require_gpu()

    import ray

    from stagetune.studies.run.cluster import NAMESPACE

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
            studies = [run_study(store_url, gpus, args.trials, args.epochs)
                       for gpus in SHARINGS]
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    failed = checks(studies, args.epochs)
    text = table(loop, studies, failed)
    print(text)
    if args.out:
        args.out.write_text(text)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
