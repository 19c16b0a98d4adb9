"""API read load: a store holding one study of 10,000 trials, concurrent clients on
loopback for 10 s against `GET /api/studies/{id}` and a trials page, on SQLite and on
PostgreSQL. Goal: p99 at most 50 ms and at least 500 requests/s on 2 cores.

The store is built directly (our tables through `Store`, the trials through Optuna's
`add_trial`, with durability relaxed while building only), then a real
`stagetune serve` subprocess serves it. The load generator is one process with
`--clients` concurrent httpx connections (asyncio), so it shares the 2 cores with the
server, as a dashboard and a few scripts on the same box would. Each endpoint is
loaded on its own for `--seconds`, after a warm-up request (the first read of a
10,000-trial study fills Optuna's trial cache: its time is reported as `first`).

    python bench/api_load.py                      # both stores, 10,000 trials, 10 s each
    python bench/api_load.py --storage sqlite --trials 2000 --seconds 5

Results go to bench/results/api_load.md (--no-write to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import httpx  # noqa: E402
import optuna  # noqa: E402
from optuna.distributions import FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402
from sqlalchemy import create_engine, event, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from stagetune.studies.search.stages import ORDER  # noqa: E402
from stagetune.studies.spec import load_spec  # noqa: E402
from stagetune.studies.store import Store  # noqa: E402
from tests.service.server import Server  # noqa: E402

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STUDY = "load-10k"


def build_store(url: str, n: int) -> None:
    """Our rows for a finished study, and `n` trials in its coarse stage."""
    store = Store(url)
    spec = load_spec({"name": STUDY, "task": {"dataset": "digits", "model": "convnet"},
                      "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                                "width": {"type": "int", "low": 8, "high": 128}}})
    store.open_study(STUDY, spec.model_dump(mode="json"), list(ORDER))
    for stage in ORDER:
        store.start_stage(STUDY, stage)
        hand_on = {"baseline": 0.96} if stage == "baseline" else {}
        if stage == "coarse":
            hand_on = {"best": {"params": {"lr": 0.01, "width": 64}, "value": 0.99, "stage": "coarse"}}
        store.finish_stage(STUDY, stage, "passed", f"{stage} done", {}, hand_on, 1.0, 1.0)
    store.set_status(STUDY, "completed")
    kwargs: dict[str, object] = {}
    if url.startswith("postgresql"):
        kwargs = {"connect_args": {"options": "-c synchronous_commit=off"}}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    if url.startswith("sqlite"):
        event.listen(storage.engine, "connect",
                     lambda conn, _: conn.execute("PRAGMA synchronous=OFF"))
    study = optuna.create_study(storage=storage, study_name=f"{STUDY}:coarse", direction="maximize")
    rng = random.Random(0)
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "width": IntDistribution(8, 128)}
    for _ in range(n):
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=rng.random(), distributions=dists,
            params={"lr": 10 ** rng.uniform(-4, -1), "width": rng.randint(8, 128)},
            user_attrs={"status": "completed", "epochs": 2},
            intermediate_values={1: rng.random(), 2: rng.random()}))


async def load(url: str, path_for: object, clients: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await http.get(path_for())  # type: ignore[operator]
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text

    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return latencies


def measure(label: str, url: str, n: int, clients: int, seconds: float) -> list[tuple]:
    started = time.perf_counter()
    build_store(url, n)
    built = time.perf_counter() - started
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(url, Path(tmp) / "data").start()
        try:
            rng = random.Random(1)
            endpoints = {
                "GET /api/studies/{id}": lambda: f"/api/studies/{STUDY}",
                "GET /api/studies/{id}/trials (page of 50)":
                    lambda: f"/api/studies/{STUDY}/trials?offset={rng.randrange(0, n - 50)}&limit=50",
            }
            for name, path_for in endpoints.items():
                first_started = time.perf_counter()
                httpx.get(server.url + path_for(), timeout=120).raise_for_status()
                first = time.perf_counter() - first_started
                latencies = asyncio.run(load(server.url, path_for, clients, seconds))
                ordered = sorted(latencies)
                rows.append((label, name, len(latencies) / seconds,
                             statistics.median(ordered) * 1e3,
                             ordered[int(0.99 * (len(ordered) - 1))] * 1e3, first * 1e3, built))
        finally:
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--storage", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", default=os.environ.get("STAGETUNE_TEST_POSTGRES_URL", PG_DEFAULT))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows: list[tuple] = []
    if args.storage in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            rows += measure("SQLite", f"sqlite:///{tmp}/load.db", args.trials, args.clients, args.seconds)
    if args.storage in ("postgresql", "both"):
        name = f"stagetune_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(args.pg_url).set(database=name).render_as_string(hide_password=False)
            rows += measure("PostgreSQL", url, args.trials, args.clients, args.seconds)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    table = render(rows, args)
    print(table)
    if not args.no_write:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "api_load.md").write_text(table)


def render(rows: list[tuple], args: argparse.Namespace) -> str:
    lines = [f"# API read load, a study of {args.trials:,} trials", "",
             f"{dt.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"Python {platform.python_version()}; {args.clients} concurrent clients for "
             f"{args.seconds:g} s per endpoint, in one process on the same machine.", "",
             "Command: `python bench/api_load.py`", "",
             "| store | endpoint | req/s | p50 ms | p99 ms | first request ms | store built in s |",
             "|---|---|--:|--:|--:|--:|--:|"]
    for store, name, rps, p50, p99, first, built in rows:
        lines.append(f"| {store} | {name} | {rps:.0f} | {p50:.1f} | {p99:.1f} | {first:.0f} | {built:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
