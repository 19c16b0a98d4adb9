"""Dashboard at scale: a store holding one finished study of 10,000 trials (coarse and
refine, with per-epoch curves), served by `stagetune serve` and by optuna-dashboard
(`optuna-dashboard <url>`) in the same run, on loopback.

For each figure: `first` is the first request after a warm-up read of the study (so
both servers have their trials in memory; for us it is the figure being drawn), then
`repeat` is the median of 5 more requests (ours are cached until the study changes;
optuna-dashboard draws its server-side plots every time). Optuna-dashboard draws the
optimization history and intermediate values in the browser from
`GET /api/studies/{id}` (every trial as JSON): that request is its cost for them.

    python bench/dashboard_scale.py                 # 10,000 trials on SQLite
    python bench/dashboard_scale.py --trials 2000

Results go to bench/results/dashboard_scale.md (--no-write to skip).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import httpx  # noqa: E402
import optuna  # noqa: E402
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402
from sqlalchemy import event  # noqa: E402

from stagetune.studies.search.stages import ORDER  # noqa: E402
from stagetune.studies.spec import load_spec  # noqa: E402
from stagetune.studies.store import Store, session_scope  # noqa: E402
from stagetune.studies.store._tables import StudyRow, TrialMetricRow  # noqa: E402
from tests.service.server import Server, free_port  # noqa: E402

STUDY = "scale-10k"
DISTS = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "width": IntDistribution(8, 128),
         "dropout": FloatDistribution(0.0, 0.5),
         "optimizer": CategoricalDistribution(["sgd", "adamw"])}


def _trial(rng: random.Random, epochs: int, prune: bool) -> tuple[optuna.trial.FrozenTrial, list]:
    params = {"lr": 10 ** rng.uniform(-4, -1), "width": rng.randint(8, 128),
              "dropout": rng.uniform(0, 0.5), "optimizer": rng.choice(["sgd", "adamw"])}
    quality = 1 - abs(params["lr"] - 0.01) * 5 - params["dropout"] * 0.1
    stop = rng.randint(1, epochs - 1) if prune else epochs
    curve = [min(0.999, quality * (1 - 0.5 ** e) + rng.gauss(0, 0.01)) for e in range(1, stop + 1)]
    epochs_rows = [{"epoch": e, "val_accuracy": v, "train_accuracy": min(1.0, v + 0.02),
                    "val_loss": 1 - v, "train_loss": 0.9 - v, "lr": params["lr"]}
                   for e, v in enumerate(curve, 1)]
    frozen = create_trial(state=TrialState.PRUNED if prune else TrialState.COMPLETE,
                          value=None if prune else max(curve), distributions=DISTS, params=params,
                          user_attrs={"status": "pruned" if prune else "completed",
                                      "epochs": stop},
                          intermediate_values=dict(enumerate(curve, 1)))
    return frozen, epochs_rows


def build_store(url: str, n: int) -> None:
    """A finished study: 60% of the trials in coarse (2 epochs), 40% in refine (10 epochs,
    a third pruned), each with its per-epoch curves in our metrics table."""
    store = Store(url)
    spec = load_spec({"name": STUDY, "task": {"dataset": "digits", "model": "convnet"},
                      "space": {k: {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}
                                if k == "lr" else {"type": "int", "low": 8, "high": 128}
                                if k == "width" else {"type": "float", "low": 0.0, "high": 0.5}
                                if k == "dropout" else {"type": "categorical",
                                                        "choices": ["sgd", "adamw"]}
                                for k in DISTS}})
    store.open_study(STUDY, spec.model_dump(mode="json"), list(ORDER))
    storage = optuna.storages.RDBStorage(url)
    event.listen(storage.engine, "connect", lambda conn, _: conn.execute("PRAGMA synchronous=OFF"))
    rng = random.Random(0)
    for stage, count, epochs in (("coarse", int(n * 0.6), 2), ("refine", n - int(n * 0.6), 10)):
        store.start_stage(STUDY, stage)
        study = optuna.create_study(storage=storage, study_name=f"{STUDY}:{stage}",
                                    direction="maximize")
        rows = []
        for number in range(count):
            frozen, epochs_rows = _trial(rng, epochs, prune=stage == "refine" and number % 3 == 2)
            study.add_trial(frozen)
            rows += [(number, e) for e in epochs_rows]
        with session_scope(url) as s:
            study_id = s.query(StudyRow).filter_by(name=STUDY).one().id
            s.add_all(TrialMetricRow(study_id=study_id, stage=stage, trial_number=number,
                                     epoch=m["epoch"], metrics=m) for number, m in rows)
        best = study.best_trial
        hand_on = {"best": {"params": best.params, "value": best.value, "stage": stage}}
        store.finish_stage(STUDY, stage, "passed", f"{count} trials", {}, hand_on, 1.0, 1.0)
    for stage in ORDER:
        if stage not in ("coarse", "refine"):
            store.start_stage(STUDY, stage)
            store.finish_stage(STUDY, stage, "skipped", "not part of this benchmark", {},
                               {"baseline": 0.9} if stage == "baseline" else {}, 0.0, 0.0)
    store.set_status(STUDY, "completed")


def timed(http: httpx.Client, path: str, repeats: int = 5) -> tuple[float, float, int]:
    """(first, median of repeats) in ms, and the size of the answer in bytes."""
    started = time.perf_counter()
    reply = http.get(path)
    first = (time.perf_counter() - started) * 1000
    reply.raise_for_status()
    again = []
    for _ in range(repeats):
        started = time.perf_counter()
        http.get(path).raise_for_status()
        again.append((time.perf_counter() - started) * 1000)
    return first, statistics.median(again), len(reply.content)


def start_optuna_dashboard(url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    exe = str(Path(sys.executable).with_name("optuna-dashboard"))
    process = subprocess.Popen([exe, url, "--port", str(port), "--host", "127.0.0.1"],
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/api/meta", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"optuna-dashboard did not start: {log.read_text()}")


def run(n: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/store.db"
        started = time.perf_counter()
        build_store(url, n)
        print(f"store built in {time.perf_counter() - started:.0f} s", flush=True)
        storage = optuna.storages.RDBStorage(url)
        ids = {s: storage.get_study_id_from_name(f"{STUDY}:{s}") for s in ("coarse", "refine")}
        server = Server(url, Path(tmp) / "data").start()
        dashboard, base = start_optuna_dashboard(url, Path(tmp) / "optuna-dashboard.log")
        try:
            with httpx.Client(base_url=server.url, timeout=300) as ours, \
                    httpx.Client(base_url=base, timeout=300) as theirs:
                ours.get(f"/api/studies/{STUDY}").raise_for_status()  # warm-up: fill caches
                for stage in ids.values():
                    theirs.get(f"/api/studies/{stage}").raise_for_status()
                c, r = ids["coarse"], ids["refine"]
                pairs = [
                    ("study page (HTML)", f"/studies/{STUDY}", f"/dashboard/studies/{r}"),
                    ("stage timeline", f"/api/studies/{STUDY}/plots/timeline", None),
                    ("coarse: slice", f"/api/studies/{STUDY}/plots/coarse_slice",
                     f"/api/studies/{c}/plot/slice"),
                    ("coarse: parallel coordinates", f"/api/studies/{STUDY}/plots/coarse_parallel",
                     f"/api/studies/{c}/plot/parallel_coordinate"),
                    ("coarse: narrowed ranges", f"/api/studies/{STUDY}/plots/coarse_narrowing", None),
                    ("refine: history", f"/api/studies/{STUDY}/plots/refine_history",
                     f"/api/studies/{r}"),
                    ("refine: intermediate values", f"/api/studies/{STUDY}/plots/refine_intermediate",
                     f"/api/studies/{r}"),
                    ("refine: importances", f"/api/studies/{STUDY}/plots/refine_importances",
                     f"/api/studies/{r}/param_importances"),
                    ("learning curves, top 8", f"/api/studies/{STUDY}/plots/learning_curves", None),
                ]
                for label, our_path, their_path in pairs:
                    a = timed(ours, our_path)
                    b = timed(theirs, their_path) if their_path else None
                    rows.append((label, f"{a[0]:.0f}", f"{a[1]:.1f}", f"{a[2] / 1e3:.0f}",
                                 f"{b[0]:.0f}" if b else "—", f"{b[1]:.1f}" if b else "—",
                                 f"{b[2] / 1e3:.0f}" if b else "—",
                                 their_path.split("?")[0] if their_path else "no such figure"))
                    print(" | ".join(rows[-1]), flush=True)
        finally:
            dashboard.terminate()
            dashboard.wait()
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = run(args.trials)
    header = ("figure", "ours first ms", "ours repeat ms", "ours KB", "optuna-dashboard first ms",
              "optuna-dashboard repeat ms", "optuna-dashboard KB", "optuna-dashboard endpoint")
    table = ["| " + " | ".join(header) + " |", "|---|" + "--:|" * 6 + "---|"]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    import optuna_dashboard

    text = "\n".join([
        f"# Dashboard at scale: {args.trials:,} trials on SQLite", "",
        f"`python bench/dashboard_scale.py --trials {args.trials}`, "
        f"{dt.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, optuna {optuna.__version__}, "
        f"optuna-dashboard {optuna_dashboard.__version__}.", "", *table, ""])
    print(text)
    if not args.no_write:
        (HERE / "results" / "dashboard_scale.md").write_text(text)


if __name__ == "__main__":
    main()
