"""Dispatch overhead: trials that do no work, through the runner actor on a local
2-CPU Ray, against Optuna's plain ask/tell on the same storage, in the same run.

For each storage (a SQLite file, a fresh PostgreSQL database) it times:
- `optuna ask/tell`: `study.ask(distributions)` then `study.tell(trial, 0.0)`, N times,
  in this process: the floor any Optuna-based service pays per trial;
- `optuna ask/report/tell`: the same with one `trial.report` per trial (our trials
  report once per epoch, and these have one epoch);
- `stagetune`: a study whose only stage is coarse, N trials of 1 epoch on the `noop`
  plugin (20 samples, a 2x2 linear model), max_concurrent 2, through the real path:
  runner actor, Ray task per trial, a report over the wire per epoch, the store's
  writes. Timed from `start_runner` to the end of the study, for two studies in a row
  on the same cluster. `work` is the mean time inside `execute` per trial.

Per-trial ms = the span from the first trial's start on a worker to the last tell, over N;
the start-up (actor and worker processes) is reported apart, since a study pays it once.
The ratio is stagetune's per-trial ms over Optuna's ask/tell.

    python bench/dispatch_overhead.py                 # 200 trials, SQLite and PostgreSQL
    python bench/dispatch_overhead.py --trials 50 --storage sqlite

Results go to bench/results/dispatch_overhead.md (--no-write to skip).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ["STAGETUNE_PLUGINS"] = "noop_plugin"  # before Ray starts: workers inherit it
os.environ["STAGETUNE_PLUGINS_DIR"] = str(HERE / "plugins")
sys.path.insert(0, str(HERE.parent))

import optuna  # noqa: E402
import ray  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from stagetune.studies.run.cluster import NAMESPACE  # noqa: E402
from stagetune.studies.run.runner_actor import start_runner, stop_runner, wait_for  # noqa: E402
from stagetune.studies.search.stages import ORDER  # noqa: E402
from stagetune.studies.spec import load_spec  # noqa: E402
from stagetune.studies.store import Store  # noqa: E402
from stagetune.workers.plugins import load_plugins  # noqa: E402

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DISTRIBUTIONS = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}


def optuna_plain(url: str, n: int, report: bool) -> float:
    study = optuna.create_study(storage=url, study_name=f"plain-{uuid.uuid4().hex[:6]}",
                                direction="maximize")
    started = time.perf_counter()
    for _ in range(n):
        trial = study.ask(DISTRIBUTIONS)
        if report:
            trial.report(0.0, 1)
        study.tell(trial, 0.0)
    return time.perf_counter() - started


def stagetune_study(url: str, n: int, name: str) -> tuple[float, float, float]:
    """Wall time from start_runner to the study's end, the span from the first trial's
    start on a worker to the last trial's tell, and the mean time inside `execute`."""
    spec = load_spec({
        "name": name, "task": {"dataset": "noop", "model": "noop"},
        "space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
        "fixed": {"batch_size": 16},
        "stages": {"baseline": {"enabled": False}, "init_check": {"enabled": False},
                   "overfit": {"enabled": False}, "lr_probe": {"enabled": False},
                   "coarse": {"trials": n, "epochs": 1, "sampler": "random"},
                   "refine": {"enabled": False}, "confirm": {"enabled": False}},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 2}})
    store = Store(url)
    store.open_study(name, spec.model_dump(mode="json"), list(ORDER))
    started = time.perf_counter()
    actor = start_runner(name, url)
    report = wait_for(actor, poll=0.05)
    wall = time.perf_counter() - started
    stop_runner(actor)
    assert report["status"] == "completed", report
    trials = optuna.load_study(study_name=f"{name}:coarse", storage=url).get_trials()
    assert len(trials) == n and all(t.state.name == "COMPLETE" for t in trials)
    work = statistics.fmean(t.user_attrs["worker"]["finished_at"] - t.user_attrs["worker"]["started_at"]
                            for t in trials)
    first_start = min(t.user_attrs["worker"]["started_at"] for t in trials)
    span = max(t.datetime_complete.timestamp() for t in trials) - first_start  # type: ignore[union-attr]
    return wall, span, work


def fresh_postgres(base: str) -> tuple[str, str]:
    name = f"stagetune_bench_{uuid.uuid4().hex[:8]}"
    with create_engine(base, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return make_url(base).set(database=name).render_as_string(hide_password=False), name


def drop_postgres(base: str, name: str) -> None:
    with create_engine(base, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


Row = tuple[str, str, float, float, float | None]  # storage, path, wall, span, work


def measure(label: str, url: str, n: int) -> list[Row]:
    Store(url)  # our tables and Optuna's, before any timing
    optuna.create_study(storage=url, study_name="warm-up").ask()
    rows: list[Row] = []
    for path, report in (("optuna ask/tell", False), ("optuna ask/report/tell", True)):
        wall = optuna_plain(url, n, report)
        rows.append((label, path, wall, wall, None))
    for i in (1, 2):
        wall, span, work = stagetune_study(url, n, f"dispatch-{i}")
        rows.append((label, f"stagetune, study {i}", wall, span, work))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--storage", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", default=os.environ.get("STAGETUNE_TEST_POSTGRES_URL", PG_DEFAULT))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load_plugins()
    ray.init(address="local", num_cpus=2, namespace=NAMESPACE, include_dashboard=False,
             log_to_driver=False)
    rows: list[Row] = []
    started = time.perf_counter()
    try:
        if args.storage in ("sqlite", "both"):
            with tempfile.TemporaryDirectory() as tmp:
                rows += measure("SQLite", f"sqlite:///{tmp}/bench.db", args.trials)
        if args.storage in ("postgresql", "both"):
            url, name = fresh_postgres(args.pg_url)
            try:
                rows += measure("PostgreSQL", url, args.trials)
            finally:
                drop_postgres(args.pg_url, name)
    finally:
        ray.shutdown()
    table = render(rows, args.trials, time.perf_counter() - started)
    print(table)
    if not args.no_write:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "dispatch_overhead.md").write_text(table)


def render(rows: list[Row], n: int, seconds: float) -> str:
    lines = [f"# Dispatch overhead, {n} no-work trials", "",
             f"{dt.date.today()}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, Python {platform.python_version()}, optuna "
             f"{optuna.__version__}, ray {ray.__version__}; whole run {seconds:.0f} s.", "",
             "Command: `python bench/dispatch_overhead.py" + (f" --trials {n}" if n != 200 else "") + "`", "",
             "`per trial` is the span from the first trial's start on a worker to the last tell,",
             "over N; `start-up` is the rest of the wall time (creating the runner actor,",
             "starting the worker processes, each of which imports torch); `work` is the mean time inside",
             "`execute`; the ratio is `per trial` over Optuna's ask/tell on the same storage.", "",
             "| storage | path | wall s | start-up s | per trial ms | work ms | ratio to ask/tell |",
             "|---|---|--:|--:|--:|--:|--:|"]
    base: dict[str, float] = {}
    for storage, path, wall, span, work in rows:
        base.setdefault(storage, span)
        lines.append(f"| {storage} | {path} | {wall:.2f} | {wall - span:.2f} | {span / n * 1e3:.1f} | "
                     f"{'—' if work is None else f'{work * 1e3:.1f}'} | {span / base[storage]:.2f}× |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
