"""Diagnose a run from its per-epoch curves: what went wrong, and what to try next.

The rules are checked in order and the first that fires names the run:

1. unstable: a value is NaN or infinite; or the epoch-mean training loss rises by
   more than `SPIKE` of its first-epoch value in one epoch; or the objective swings
   up and down (`MIN_SWINGS` reversals of moves larger than `SWING` of its typical size).
2. overfitting: validation loss bottomed out before the last quarter of the run and
   sits `OVERFIT_RISE` above that minimum over the last quarter, while the training
   loss kept falling (the gap between them grew).
3. underfitting: the best objective does not cut the linear baseline's error by
   `UNDERFIT_CUT` (for a model that is itself linear, `linear_model`: its error exceeds
   the baseline's by more than `LINEAR_SHORT`, since it cannot beat its own class), or the
   training loss ended above `UNDERFIT_TRAIN_RATIO` of its first-epoch value. Its
   learning-rate advice follows the training loss: smaller where it went up and down,
   larger only where it still fell steadily.
4. still_improving: the last quarter of the epochs set a new best objective, adding more
   than `IMPROVING_SHARE` of the whole run's gain, or the validation loss fell more than
   `IMPROVING_LOSS_DROP` below its earlier minimum.
5. saturated: none of those; the curves have flattened.

"Error" below is 1 - value for a maximised objective (an accuracy) and the value
itself for a minimised one (an RMSE or a loss).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from stagetune.studies.reporting.numbers import sig

DiagnosisKind = Literal["overfitting", "underfitting", "unstable", "still_improving", "saturated",
                        "not_diagnosed"]
# In the order the rules are checked: the first that fires names the run.
KINDS: tuple[str, ...] = ("unstable", "overfitting", "underfitting", "still_improving", "saturated")

# Fewer epochs than this show no trend to judge.
MIN_EPOCHS = 3
# The epoch mean of the training loss is smooth in a healthy run, even with noisy
# batches; a rise of a tenth of its starting level in one epoch is a loss spike.
SPIKE = 0.10
# Validation metrics are noisy (digits: one sample is 0.3 points of accuracy), so only
# moves above a tenth of the metric's median size count as swings, and only two
# reversals between such moves (up-down-up) make an oscillation, not a single dip.
SWING = 0.10
MIN_SWINGS = 2
# Validation loss 20% above its minimum across the whole last quarter is a trend,
# not one noisy epoch.
OVERFIT_RISE = 0.20
# A network should remove at least 5% of a linear model's error; less is within the
# noise of a validation split, so the network adds nothing the baseline did not have.
UNDERFIT_CUT = 0.05
# A linear model cannot beat the baseline, a model of its own class fitted to its optimum;
# trained by SGD on a budget it gets near it. An error up to a quarter above the
# baseline's (digits: 0.045 against 0.036, three samples of 360) matches it; further
# short, it underfits.
LINEAR_SHORT = 0.25
# Healthy runs end well below three quarters of the first epoch's mean loss (that mean
# already includes the first epoch's learning); a run that does not barely learned.
UNDERFIT_TRAIN_RATIO = 0.75
# A high training loss that moved less than 5% over the second half has stopped, rather
# than creeping down slowly (too small a learning rate): worth a hint either way.
FLAT = 0.05
# The last quarter is still climbing if its new best adds more than 5% of the run's
# total gain, or if the validation loss fell more than 10% below its earlier minimum:
# accuracy is coarse (one sample a step) and flat near 100%, the loss is neither.
IMPROVING_SHARE = 0.05
IMPROVING_LOSS_DROP = 0.10


@dataclass(frozen=True)
class Diagnosis:
    """What the curves show (`message`, with numbers), a suggested `fix`, and the numbers used."""

    kind: DiagnosisKind
    message: str
    fix: str
    figures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Curves:
    epochs: np.ndarray
    train_loss: np.ndarray
    val_loss: np.ndarray
    objective: np.ndarray
    name: str
    maximize: bool
    baseline: float | None
    linear_model: bool = False

    @property
    def tail(self) -> int:
        """Epochs in the run's last quarter (at least two)."""
        return max(2, math.ceil(len(self.epochs) / 4))

    def best_index(self) -> int:
        return int(np.argmax(self.objective) if self.maximize else np.argmin(self.objective))

    def gain(self, new: float, old: float) -> float:
        """How much better `new` is than `old`, in the objective's direction."""
        return new - old if self.maximize else old - new

    def error(self, value: float) -> float:
        return 1.0 - value if self.maximize else value

    def fmt(self, value: float) -> str:
        """A value of the objective as people read it (three significant figures)."""
        return sig(value)


def diagnose(history: Sequence[dict[str, float]], objective: str, direction: str,
             baseline: float | None = None, linear_model: bool = False) -> Diagnosis:
    """Name what the per-epoch `history` of a run shows; see the module docstring for the rules.

    `objective` is the metric the run is judged by (val_accuracy, val_rmse), `direction`
    "maximize" or "minimize", `baseline` the linear model's score on the same split;
    `linear_model`: the run's model is an affine map of its input, as the baseline is.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize' (got {direction!r})")
    curves = _curves(history, objective, direction == "maximize", baseline, linear_model)
    for rule in RULES:
        found = rule(curves)
        if found is not None:
            return found
    return _saturated(curves)


def _curves(history: Sequence[dict[str, float]], objective: str, maximize: bool,
            baseline: float | None, linear_model: bool = False) -> _Curves:
    missing = sorted({k for m in history for k in ("train_loss", "val_loss", objective)
                      if k not in m})
    if missing:
        raise ValueError(f"history lacks {', '.join(missing)}; each epoch needs train_loss, "
                         f"val_loss and the objective '{objective}'")

    def column(key: str) -> np.ndarray:
        # None stands for NaN where metrics went through JSON, which has no NaN.
        return np.array([math.nan if m[key] is None else float(m[key]) for m in history])

    epochs = np.array([float(m.get("epoch", i + 1)) for i, m in enumerate(history)])
    return _Curves(epochs, column("train_loss"), column("val_loss"), column(objective),
                   objective, maximize, baseline, linear_model)


def _not_finite(c: _Curves) -> Diagnosis | None:
    for name, values in (("training loss", c.train_loss), ("validation loss", c.val_loss),
                         (c.name, c.objective)):
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            epoch = int(c.epochs[bad[0]])
            return Diagnosis("unstable", f"The {name} became {values[bad[0]]} in epoch {epoch}: "
                             "training blew up.", _UNSTABLE_FIX, {"epoch": float(epoch)})
    return None


def _too_short(c: _Curves) -> Diagnosis | None:
    if len(c.epochs) >= MIN_EPOCHS:
        return None
    what = "No epoch finished" if len(c.epochs) == 0 else f"Only {len(c.epochs)} epoch(s) ran"
    return Diagnosis("still_improving", f"{what}: too little to judge the curves.",
                     f"Train for at least {MIN_EPOCHS} epochs to get a diagnosis.",
                     {"epochs": float(len(c.epochs))})


def _unstable(c: _Curves) -> Diagnosis | None:
    rises = np.diff(c.train_loss)
    spike = int(np.argmax(rises))
    if rises[spike] > SPIKE * c.train_loss[0]:
        before, after = float(c.train_loss[spike]), float(c.train_loss[spike + 1])
        epoch = int(c.epochs[spike + 1])
        return Diagnosis(
            "unstable", f"The training loss jumped from {sig(before)} to {sig(after)} in epoch "
            f"{epoch}, {rises[spike] / c.train_loss[0]:.0%} of its first-epoch {sig(c.train_loss[0])}: "
            "the updates are too large.", _UNSTABLE_FIX,
            {"spike_epoch": float(epoch), "loss_before": before, "loss_after": after,
             "first_train_loss": float(c.train_loss[0])})
    moves = np.diff(c.objective)
    size = SWING * float(np.median(np.abs(c.objective)))
    large = moves[np.abs(moves) > size]
    swings = int(np.sum(np.sign(large[1:]) != np.sign(large[:-1])))
    if swings >= MIN_SWINGS:
        worst = int(np.argmax(-moves if c.maximize else moves))
        return Diagnosis(
            "unstable", f"{c.name} swung up and down {swings} times by more than {sig(size)} "
            f"between epochs (worst: {c.fmt(c.objective[worst])} to {c.fmt(c.objective[worst + 1])} in "
            f"epoch {int(c.epochs[worst + 1])}).", _UNSTABLE_FIX,
            {"swings": float(swings), "swing_size": size})
    return None


def _overfitting(c: _Curves) -> Diagnosis | None:
    low = int(np.argmin(c.val_loss))
    if low >= len(c.epochs) - c.tail:
        return None
    val_end = float(np.mean(c.val_loss[-c.tail:]))
    train_end = float(np.mean(c.train_loss[-c.tail:]))
    val_min, train_at_min = float(c.val_loss[low]), float(c.train_loss[low])
    if val_end < (1 + OVERFIT_RISE) * val_min or train_end >= train_at_min:
        return None
    epoch = int(c.epochs[low])
    gap_then, gap_now = val_min - train_at_min, val_end - train_end
    return Diagnosis(
        "overfitting", f"Validation loss bottomed at {sig(val_min)} in epoch {epoch} and averaged "
        f"{sig(val_end)} (+{val_end / val_min - 1:.0%}) over the last {c.tail} epochs while the "
        f"training loss kept falling ({sig(train_at_min)} to {sig(train_end)}); the gap grew from "
        f"{sig(gap_then)} to {sig(gap_now)}.",
        f"More weight decay or dropout, augmentation, or early stopping around epoch {epoch}.",
        {"best_val_loss": val_min, "best_val_loss_epoch": float(epoch), "val_loss_end": val_end,
         "train_loss_at_best": train_at_min, "train_loss_end": train_end,
         "gap_at_best": gap_then, "gap_end": gap_now})


def _underfitting(c: _Curves) -> Diagnosis | None:
    best = float(c.objective[c.best_index()])
    first, last = float(c.train_loss[0]), float(c.train_loss[-1])
    ratio = last / first if first > 0 else 0.0
    linear = _short_of_baseline(c, best)
    stuck = ratio > UNDERFIT_TRAIN_RATIO
    if not (linear or stuck):
        return None
    found = []
    if linear:
        found.append(
            f"the best {c.name} {c.fmt(best)} falls short of the linear baseline's "
            f"{c.fmt(c.baseline or 0.0)} (a linear model should match it)" if c.linear_model
            else f"the best {c.name} {c.fmt(best)} is not clearly better than the linear "
                 f"baseline's {c.fmt(c.baseline or 0.0)} (a network should cut its error by "
                 f"at least {UNDERFIT_CUT:.0%})")
    if stuck:
        found.append(f"the training loss only fell from {sig(first)} to {sig(last)} ({ratio:.0%} "
                     "of where it started)")
    message = "; ".join(found) + "."
    figures = {"best": best, "train_loss_ratio": ratio, "first_train_loss": first,
               "last_train_loss": last, "train_loss_rises": float(_rises(c.train_loss))}
    if c.baseline is not None:
        figures["baseline"] = c.baseline
    return Diagnosis("underfitting", message[0].upper() + message[1:],
                     _underfit_fix(c, stuck), figures)


def _short_of_baseline(c: _Curves, best: float) -> bool:
    """Whether the run fails the baseline comparison that its model can pass: a network
    must cut the baseline's error by `UNDERFIT_CUT`; a linear model, which cannot beat a
    model of its own class, must only match it (within `LINEAR_SHORT`)."""
    if c.baseline is None:
        return False
    error, linear_error = c.error(best), c.error(c.baseline)
    if c.linear_model:
        return error > (1 + LINEAR_SHORT) * linear_error
    return error > (1 - UNDERFIT_CUT) * linear_error


def _rises(loss: np.ndarray) -> int:
    """Epochs whose training loss rose by more than `FLAT` of the level before it: a
    healthy epoch mean falls every epoch until it flattens."""
    before = loss[:-1]
    return int(np.sum(np.diff(loss) > FLAT * np.abs(before)))


def _underfit_fix(c: _Curves, stuck: bool) -> str:
    """The fix, its learning-rate part read off the training loss: one that goes up and
    down overshoots (smaller), one that stopped high may overshoot too (either way), one
    that still falls steadily creeps (larger)."""
    first, last, middle = (float(c.train_loss[i]) for i in (0, -1, len(c.epochs) // 2))
    rises = _rises(c.train_loss)
    capacity = ("Fit the linear model longer or with less regularisation, or use a network "
                "for more than the baseline gives." if c.linear_model
                else "More capacity (width/depth) or less regularisation.")
    if rises >= MIN_SWINGS:
        return (f"The training loss rose in {rises} epochs instead of falling steadily: the "
                "steps overshoot; lower the learning rate (or add warmup or grad_clip) "
                f"first. {capacity}")
    if stuck and abs(last - middle) <= FLAT * middle:
        return (f"{capacity} The loss stopped moving at a high value: if the learning rate "
                "is already large, try a smaller one (too large a step can kill ReLU units); "
                "if it is small, a larger one.")
    if stuck and last < middle * (1 - FLAT):
        return (f"{capacity} The training loss was still falling steadily: a larger learning "
                "rate or more epochs.")
    if c.linear_model:
        return capacity
    return f"{capacity} If the task is close to linear, a network adds little over the baseline."


def _still_improving(c: _Curves) -> Diagnosis | None:
    head = slice(0, len(c.epochs) - c.tail)
    before = c.objective[head]
    old = float(before[np.argmax(before) if c.maximize else np.argmin(before)])
    best_i = c.best_index()
    best = float(c.objective[best_i])
    tail_gain, total_gain = c.gain(best, old), c.gain(best, float(c.objective[0]))
    earlier = float(np.min(c.val_loss[head]))
    loss_drop = 1 - float(np.min(c.val_loss[-c.tail:])) / earlier if earlier > 0 else 0.0
    rising = tail_gain > 0 and tail_gain > IMPROVING_SHARE * total_gain
    if not rising and loss_drop <= IMPROVING_LOSS_DROP:
        return None
    last = int(c.epochs[-1])
    verb = "rising" if c.maximize else "falling"
    found = []
    if rising:
        found.append(f"{c.name} was still {verb}: best {c.fmt(old)} before the last {c.tail} "
                     f"epochs, {c.fmt(best)} in epoch {int(c.epochs[best_i])}")
    if loss_drop > IMPROVING_LOSS_DROP:
        found.append(f"the validation loss fell {loss_drop:.0%} below its earlier minimum over "
                     f"the last {c.tail} epochs" + ("" if rising else f" ({c.name} held near "
                                                    f"{c.fmt(best)})"))
    message = "; ".join(found) + "."
    return Diagnosis(
        "still_improving", message[0].upper() + message[1:],
        f"Train longer (the curve was still improving at epoch {last}).",
        {"best": best, "best_before_tail": old, "tail_gain": tail_gain, "total_gain": total_gain,
         "val_loss_drop": loss_drop})


def _saturated(c: _Curves) -> Diagnosis:
    best_i = c.best_index()
    best = float(c.objective[best_i])
    spread = float(np.ptp(c.objective[-c.tail:]))
    moved = f"moved within {sig(spread)}" if spread > 0 else "did not move"
    if best_i >= len(c.epochs) - c.tail:
        moved += f" and beat its earlier best by under {IMPROVING_SHARE:.0%} of the run's gain"
    else:
        moved += " and set no new best"
    return Diagnosis(
        "saturated", f"{c.name} settled: best {c.fmt(best)} in epoch {int(c.epochs[best_i])}; over "
        f"the last {c.tail} epochs it {moved}.",
        "It has converged at this budget: to go further change the capacity, the data "
        "(augmentation, more samples) or the regularisation; otherwise it is done.",
        {"best": best, "best_epoch": float(c.epochs[best_i]), "tail_spread": spread})


_UNSTABLE_FIX = "Lower the learning rate, add warmup or gradient clipping (grad_clip)."

RULES: tuple[Callable[[_Curves], Diagnosis | None], ...] = (
    _not_finite, _too_short, _unstable, _overfitting, _underfitting, _still_improving,
)
