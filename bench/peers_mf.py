"""Multi-fidelity peers for bench/search_efficiency.py: DEHB and SMAC3's multi-fidelity facade.

- dehb: DEHB (differential evolution over Hyperband's brackets; PyPI `dehb`) through its
  ask/tell interface, min_fidelity 1, max_fidelity E, eta 3, seeded, in its single-process
  mode (n_workers=1, no Dask client: no cluster is started).
- smac: SMAC3's MultiFidelityFacade (PyPI `smac`; BOHB-like: a random-forest surrogate with
  expected improvement, a random initial design and the Hyperband intensifier), eta 3,
  min_budget 1, max_budget E, seeded, ask/tell, one trial at a time. Its Scenario's
  n_trials, which sizes the initial design, is SMAC's own conversion of B epochs into a
  number of Hyperband trials (`get_n_trials_for_hyperband_multifidelity`).

Fidelity is epochs: a configuration asked at fidelity b trains b epochs from scratch
through `workers.execute` (TrialRequest.epochs = b, so its LR schedule spans those b
epochs). Neither library continues a lower rung's checkpoint, so a configuration promoted
from b to 3b epochs is trained again from its first epoch and pays all 3b. Each reported
epoch counts 1 into the Run, and a diverged trial counts the epoch it diverged in too, as
for the other peers; when no room is left for one more epoch the running trial is stopped
and the search ends, so a run never spends more than B. A trial cut off by the budget is
not told (nothing runs after it). Both libraries minimise: a trial tells 1 - its best
val_accuracy; a trial that failed, diverged or saw no epoch tells the worst cost, 1.0.

search_efficiency.py imports this module only for these two strategies (it pulls in
ConfigSpace, dask and loguru), and this module imports nothing from it: the Run and the
space's config come in as arguments (see RunLike and SpaceLike).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from stagetune.workers import StagetuneError, Task, TrialRequest, execute

if TYPE_CHECKING:
    from ConfigSpace import Configuration, ConfigurationSpace

ETA = 3  # the reduction factor, as for tpe_hyperband and asha
WORST = 1.0  # 1 - val_accuracy of a trial that failed, diverged or saw no epoch
EPS = 1e-6  # as search_efficiency.EPS
MAX_FAILED = 20  # failed trials spend nothing: past this many a search would never end


class RunLike(Protocol):
    """What this module needs of search_efficiency.Run."""

    strategy: str
    budget: float
    spent: float
    states: dict[str, int]

    def see(self, epochs: float, value: float | None) -> None: ...

    def trial(self, status: str, epochs: float, best: float, **details: Any) -> None: ...


class SpaceLike(Protocol):
    """What this module needs of search_efficiency.SpaceConfig (a frozen dataclass)."""

    @property
    def fixed(self) -> dict[str, Any]: ...

    @property
    def epochs(self) -> int: ...

    @property
    def budget(self) -> int: ...

    def task(self) -> Task: ...


@dataclass(frozen=True)
class Outcome:
    """One trained configuration, as the optimizer is told it."""

    cost: float  # 1 - best val_accuracy, or WORST
    epochs: float  # epochs it spent, counted the common way
    told: bool  # False: the budget cut it off, and the search ends without telling it
    crashed: bool  # failed or diverged


# -- the space and the training function -------------------------------------------------


def config_space(distributions: Mapping[str, BaseDistribution], seed: int) -> ConfigurationSpace:
    """The Optuna peers' distributions as a seeded ConfigSpace space (floats and ints with
    their log flag, categoricals with their choices)."""
    from ConfigSpace import Categorical, ConfigurationSpace, Float, Integer

    space = ConfigurationSpace(seed=seed)
    for name, d in distributions.items():
        if isinstance(d, CategoricalDistribution):
            space.add(Categorical(name, list(d.choices)))
        elif isinstance(d, IntDistribution) and d.step == 1:
            space.add(Integer(name, (d.low, d.high), log=d.log))
        elif isinstance(d, FloatDistribution) and d.step is None:
            space.add(Float(name, (d.low, d.high), log=d.log))
        else:  # a stepped float or int has no plain ConfigSpace twin: refuse, do not round
            raise ValueError(f"{name}: {d} has no ConfigSpace equivalent here")
    return space


def params_of(config: Configuration | Mapping[str, Any]) -> dict[str, Any]:
    """Plain Python values: ConfigSpace hands numpy scalars back, which neither the
    worker's knobs nor the raw JSON lines take."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in dict(config).items()}


def epochs_at(fidelity: float, top: int) -> int:
    """A library's fidelity as whole epochs (DEHB's are floats: E * eta**-k)."""
    return min(top, max(1, round(fidelity)))


def has_room(run: RunLike) -> bool:
    return run.spent + 1 <= run.budget + EPS


def train(run: RunLike, cfg: SpaceLike, params: dict[str, Any], epochs: int, number: int,
          seed: int) -> Outcome:
    """Train `params` for `epochs` epochs from scratch, counting every reported epoch into
    `run` and stopping when the budget has no room for another; logs the trial."""
    values: list[float] = []
    cut = False

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        nonlocal cut
        run.see(1.0, metrics["val_accuracy"])
        values.append(metrics["val_accuracy"])
        # At its last epoch nothing more would run: let it finish as completed.
        cut = not has_room(run) and epoch < epochs
        return cut

    request = TrialRequest(cfg.task(), params={**cfg.fixed, **params}, epochs=epochs,
                           seed=seed * 10_000 + number)
    details = {"number": number, "fidelity": epochs, "params": params}
    try:
        result = execute(request, report)
    except StagetuneError as exc:  # a bad draw: recorded, never fatal
        logging.getLogger(__name__).warning("trial %s failed: %s", params, exc)
        run.trial("failed", len(values), best_of(values), **details)
        return Outcome(WORST, len(values), told=True, crashed=True)
    diverged = result.status == "diverged"
    if diverged:
        run.see(1.0, None)  # the epoch it diverged in
    status = ("diverged" if diverged else "cut_by_budget" if cut and result.status == "stopped"
              else "low_fidelity" if result.status == "completed" and epochs < cfg.epochs
              else result.status)
    spent = len(values) + diverged
    run.trial(status, spent, best_of(values), parameters=result.parameters, **details)
    crashed = diverged or not values
    return Outcome(WORST if crashed else 1.0 - max(values), spent,
                   told=status != "cut_by_budget", crashed=crashed)


def best_of(values: list[float]) -> float:
    return max(values) if values else math.nan


def check_failures(run: RunLike) -> None:
    if run.states.get("failed", 0) > MAX_FAILED:
        raise RuntimeError(f"{run.strategy}'s trials keep failing; see the log")


# -- DEHB --------------------------------------------------------------------------------


def run_dehb(run: RunLike, cfg: SpaceLike, distributions: Mapping[str, BaseDistribution],
             seed: int, work: Path) -> None:
    """DEHB's ask/tell until the budget is spent."""
    from loguru import logger

    optimizer = make_dehb(cfg, distributions, seed, work)
    try:
        number = 0
        while has_room(run):
            job = optimizer.ask()
            outcome = train(run, cfg, params_of(job["config"]),
                            epochs_at(job["fidelity"], cfg.epochs), number, seed)
            number += 1
            if outcome.told:
                optimizer.tell(job, {"fitness": outcome.cost, "cost": outcome.epochs})
            check_failures(run)
    finally:
        # Each DEHB adds a loguru file sink with a writer thread (enqueue=True) and keeps no
        # handle to it; nothing else here logs through loguru, so drop them all.
        logger.remove()


def make_dehb(cfg: SpaceLike, distributions: Mapping[str, BaseDistribution], seed: int,
              work: Path) -> Any:
    from dehb import DEHB  # type: ignore[import-untyped]
    from loguru import logger

    # dehb's import points loguru at stdout, and it logs every step at INFO.
    logger.disable("dehb")
    return DEHB(
        cs=config_space(distributions, seed), dimensions=len(distributions),
        min_fidelity=1, max_fidelity=cfg.epochs, eta=ETA, seed=seed,
        n_workers=1, client=None,  # single process: no Dask cluster
        output_path=str(work), save_freq="end",  # "end" is only run()'s: no state files
    )


# -- SMAC3 -------------------------------------------------------------------------------


def run_smac(run: RunLike, cfg: SpaceLike, distributions: Mapping[str, BaseDistribution],
             seed: int, work: Path) -> None:
    """SMAC3's multi-fidelity facade, ask/tell until the budget is spent."""
    from smac.runhistory.dataclasses import TrialValue
    from smac.runhistory.enumerations import StatusType

    smac = make_smac(cfg, distributions, seed, work)
    number = 0
    while has_room(run):
        info = smac.ask()
        started = time.perf_counter()
        outcome = train(run, cfg, params_of(info.config), epochs_at(info.budget, cfg.epochs),
                        number, seed)
        number += 1
        if outcome.told:
            status = StatusType.CRASHED if outcome.crashed else StatusType.SUCCESS
            smac.tell(info, TrialValue(cost=outcome.cost, time=time.perf_counter() - started,
                                       status=status), save=False)
        check_failures(run)


def make_smac(cfg: SpaceLike, distributions: Mapping[str, BaseDistribution], seed: int,
              work: Path) -> Any:
    from smac import MultiFidelityFacade, Scenario
    from smac.intensifier.hyperband_utils import get_n_trials_for_hyperband_multifidelity

    # logging_level=False: SMAC would otherwise dictConfig the whole logging tree.
    logging.getLogger("smac").setLevel(logging.ERROR)
    n_trials = get_n_trials_for_hyperband_multifidelity(
        total_budget=cfg.budget, min_budget=1, max_budget=cfg.epochs, eta=ETA, print_summary=False)
    scenario = Scenario(config_space(distributions, seed), name="smac", output_directory=work,
                        deterministic=True, n_trials=int(n_trials), min_budget=1,
                        max_budget=cfg.epochs, seed=seed)
    model = MultiFidelityFacade.get_model(scenario)
    # The facade's sklearn forest fits and predicts on every core (n_jobs=-1); the bench
    # runs one thread per process (torch's too), so that --jobs units do not compete.
    model._rf_opts["n_jobs"] = 1
    return MultiFidelityFacade(
        scenario, target_function=None,  # ask/tell: this module trains
        model=model, intensifier=MultiFidelityFacade.get_intensifier(scenario, eta=ETA),
        logging_level=False, overwrite=True)


PEERS: dict[str, Callable[[RunLike, SpaceLike, Mapping[str, BaseDistribution], int, Path], None]] = {
    "dehb": run_dehb,
    "smac": run_smac,
}
