"""The training loop: one linear pass over epochs, reporting after each.

Arrays live on the device as whole tensors, so an epoch is a shuffled walk over index
slices with no DataLoader; a streamed dataset is read by DataLoader workers and
normalised on the device (workers.batches). The loop is the same for both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from stagetune.workers import checkpoint
from stagetune.workers.augment import Augmenter, build_augmenter
from stagetune.workers.batches import Batch, StreamBatches, TensorBatches, batches_for, slices
from stagetune.workers.checkpoint import LoopState, RunShape
from stagetune.workers.config import ModelConfig, TrainConfig
from stagetune.workers.data import AnyDataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.losses import LossFunction, loss_fn
from stagetune.workers.metrics import Scorer
from stagetune.workers.models import set_train_mode
from stagetune.workers.objective import Scoring, scoring_for
from stagetune.workers.optim import build_optimizer, build_scheduler
from stagetune.workers.request import Metrics
from stagetune.workers.vitals import Vitals, check_step

Report = Callable[[int, Metrics], bool]
"""Called after each epoch with its metrics; returning True stops the run (pruning)."""

Save = Callable[[int, bytes], None]
"""Called after each epoch in `checkpoint_at`, once the epoch is reported, with the epoch
and its checkpoint's bytes."""

DIVERGENCE_FACTOR = 10.0  # a training loss this many times the first one has diverged
CHECK_EVERY = 20  # steps between divergence checks (each check syncs with the device)


@dataclass
class TrainOutcome:
    """How a run ended: completed, early_stopped, stopped (by the caller), hopeless (its
    vital signs) or diverged."""

    status: str
    history: list[Metrics] = field(default_factory=list)
    message: str = ""
    epoch: int | None = None
    start_epoch: int = 0  # the epoch a resumed run continued after
    partial: float = 0.0  # the share of epoch `epoch` run before a mid-epoch stop (hopeless)


@torch.no_grad()
def evaluate(model: nn.Module, data: AnyDataset,
             x: torch.Tensor | TensorBatches | StreamBatches, y: torch.Tensor | None = None,
             batch_size: int = 1024, scoring: Scoring | None = None) -> Metrics:
    """val_loss and the scoring's val_<metric>s over (x, y) in eval mode (regression
    metrics in label units); with `y` None, over the validation split of the run's
    batches `x` (workers.batches)."""
    model.eval()
    scoring = scoring or scoring_for(None, data)
    if isinstance(x, torch.Tensor):
        if y is None:
            raise TypeError("evaluate: validation tensors x need their labels y")
        batches: Iterable[Batch] = slices(x, y, batch_size)
    else:
        batches = x.validation()
    scorer = Scorer(data, loss_fn(data, loss=scoring.loss), scoring.metrics, x.device)
    for xb, yb in batches:
        scorer.update(model(xb), yb)
    return scorer.compute()


def train(
    model: nn.Module,
    data: AnyDataset,
    train_cfg: TrainConfig,
    model_cfg: ModelConfig,
    epochs: int,
    device: torch.device,
    generator: torch.Generator,
    report: Report | None = None,
    *,
    horizon: int | None = None,
    checkpoint_at: Collection[int] = (),
    save: Save | None = None,
    resume: bytes | None = None,
    scoring: Scoring | None = None,
    watch: bool = False,
) -> TrainOutcome:
    """Train `model` on `data` up to epoch `epochs`; never raises on divergence.

    The LR schedule spans `horizon` epochs (default `epochs`). With `resume` (bytes
    that `save` was handed after epoch k) the run goes on with epoch k + 1. `scoring`
    (workers.objective.scoring_for) names the loss, the metrics and the objective that
    early stopping follows; by default the dataset's. With `watch`, a fresh run whose
    vital signs say it is hopeless stops early with status "hopeless" (workers.vitals).
    """
    run = _setup(model, data, train_cfg, model_cfg, epochs, device, generator,
                 horizon=epochs if horizon is None else horizon, resume=resume,
                 scoring=scoring, watch=watch)
    outcome = TrainOutcome("completed", start_epoch=run.state.epoch)
    try:  # the DataLoader's workers end with the run, whichever way it ends
        for epoch in range(run.state.epoch + 1, epochs + 1):
            # Train one epoch: a diverging loss or hopeless vital signs end the run here.
            trained = _train_epoch(run, epoch)
            if isinstance(trained, _Stop):
                return _ended(outcome, epoch, trained)

            # Evaluate and record; the early-stopping count is updated now so a checkpoint has it.
            metrics = _epoch_metrics(run, epoch, trained)
            outcome.history.append(metrics)
            _update_state(run, epoch, metrics)

            # Report, then checkpoint, then obey: a run the caller stops can still be
            # resumed, and a checkpoint never runs ahead of the epochs reported (a runner
            # or worker lost between the two re-runs the epoch rather than lose its record).
            stopped = report is not None and report(epoch, metrics)
            if save is not None and epoch in checkpoint_at:
                save(epoch, checkpoint.dump(run.model, run.optimizer, run.scheduler,
                                            run.generator, run.state, run.shape))
            stop = _stop_after(run, epoch, stopped)
            if stop is not None:
                return _ended(outcome, epoch, stop)
        return outcome
    finally:
        run.batches.close()


@dataclass
class _Run:
    """What one run trains with, built once by `_setup`, and the state it carries across
    epochs (the part of a checkpoint that is not the model, optimizer and schedule)."""

    model: nn.Module
    data: AnyDataset
    cfg: TrainConfig
    device: torch.device
    generator: torch.Generator
    batches: TensorBatches | StreamBatches
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    criterion: LossFunction
    augment: Augmenter | None
    scoring: Scoring
    shape: RunShape
    state: LoopState
    vitals: Vitals | None
    params: list[nn.Parameter]  # the trainable ones
    autocast: torch.autocast  # bfloat16 on CUDA; off elsewhere


@dataclass
class _Epoch:
    """An epoch's training figures, read from the device once, at its end."""

    train_loss: float
    accuracy: float | None  # classification only
    grad_norm: float  # the mean of the norms measured (see `_grad_norm`)
    seen: int
    seconds: float


@dataclass
class _Stop:
    """Why a run ends before its last epoch: a TrainOutcome status and its sentence."""

    status: str
    message: str
    partial: float = 0.0  # the share of the epoch run (hopeless: it stops mid-epoch)


def _setup(model: nn.Module, data: AnyDataset, train_cfg: TrainConfig, model_cfg: ModelConfig,
           epochs: int, device: torch.device, generator: torch.Generator, *, horizon: int,
           resume: bytes | None, scoring: Scoring | None, watch: bool) -> _Run:
    """The batches (whole tensors on the device, or a stream through DataLoader workers),
    the optimizer over trainable groups, its per-step schedule and the loss; a resumed
    run's state comes from its checkpoint."""
    n, bs = data.train_size, train_cfg.batch_size
    if bs > n:
        raise ConfigError(f"batch_size {bs} is larger than the {n} training samples of {data.name}")
    batches = batches_for(data, bs, device)
    steps = batches.steps  # a trailing batch of one is dropped: it would break batch norm
    model.to(device)
    optimizer = build_optimizer(model, train_cfg, model_cfg)
    scheduler = build_scheduler(optimizer, train_cfg, steps, horizon)
    scoring = scoring or scoring_for(None, data)
    criterion = loss_fn(data, train_cfg.label_smoothing, scoring.loss)
    augment = build_augmenter(train_cfg.augmentations, data)
    shape = RunShape(type(optimizer).__name__, steps, horizon, train_cfg.schedule)
    state = LoopState()
    if resume is not None:  # after the seeded setup, so the checkpoint's RNG states win
        state = checkpoint.restore(resume, model, optimizer, scheduler, generator, shape)
    at = check_step(train_cfg, steps) if watch and resume is None else None
    vitals = Vitals(model, train_cfg, at) if at is not None and at <= steps * epochs else None
    return _Run(model, data, train_cfg, device, generator, batches, optimizer, scheduler,
                criterion, augment, scoring, shape, state, vitals,
                [p for p in model.parameters() if p.requires_grad],
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"))


def _train_epoch(run: _Run, epoch: int) -> _Epoch | _Stop:
    """One shuffled pass over the training batches, or why the run ends in it. The sums
    stay on the device to avoid a sync per step."""
    set_train_mode(run.model)
    started = time.perf_counter()
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device)
    norm_sum = torch.zeros((), device=run.device)
    seen, norms = 0, 0
    for step, (xb, yb) in enumerate(run.batches.epoch(run.generator)):
        out, loss = _forward_backward(run, xb, yb)
        if run.vitals is not None and run.vitals.due and (why := run.vitals.reason()) is not None:
            return _Stop("hopeless", why, (step + 1) / run.batches.steps)
        norm = _grad_norm(run, step)
        if norm is not None:
            norm_sum += norm
            norms += 1
        run.optimizer.step()
        run.scheduler.step()
        loss_sum += loss.detach() * len(yb)
        if run.data.task == "classification":
            correct += (out.argmax(1) == yb).sum()
        seen += len(yb)
        if step % CHECK_EVERY == 0:
            stop = _check_loss(run.state, loss.item(), epoch)
            if stop is not None:
                return stop
    train_loss = float(loss_sum) / seen
    seconds = time.perf_counter() - started
    if (stop := _diverged(train_loss, run.state.first_loss, epoch)) is not None:
        return stop
    accuracy = float(correct) / seen if run.data.task == "classification" else None
    return _Epoch(train_loss, accuracy, float(norm_sum) / max(norms, 1), seen, seconds)


def _forward_backward(run: _Run, xb: torch.Tensor, yb: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's outputs (in bfloat16 autocast on CUDA) and loss, its gradients
    computed; the vital signs watch each pass."""
    if run.augment is not None:
        xb = run.augment(xb)
    vitals = run.vitals
    if vitals is not None:
        vitals.before_forward()
    with run.autocast:
        out = run.model(xb)
    if vitals is not None:
        vitals.after_forward()
    loss = run.criterion(out.float(), yb)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if vitals is not None:
        vitals.after_backward(loss)
    return out, loss


def _grad_norm(run: _Run, step: int) -> torch.Tensor | None:
    """The gradients' total norm, clipping them to grad_clip when that is set. It is
    measured every step when clipping, else every CHECK_EVERY steps (None between): a
    norm over all gradients costs ~5% of a small model's step."""
    if run.cfg.grad_clip:
        return torch.nn.utils.clip_grad_norm_(run.params, run.cfg.grad_clip, foreach=True)
    if step % CHECK_EVERY == 0:
        grads = [p.grad for p in run.params if p.grad is not None]
        return torch.nn.utils.get_total_norm(grads, foreach=True)
    return None


def _check_loss(state: LoopState, value: float, epoch: int) -> _Stop | None:
    """A step's loss against the run's first (which the first check records)."""
    if state.first_loss is None:
        state.first_loss = value
    return _diverged(value, state.first_loss, epoch)


def _diverged(loss: float, first: float | None, epoch: int) -> _Stop | None:
    """Divergence: a loss that is not finite, or DIVERGENCE_FACTOR times the first."""
    if first is not None and (not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * first):
        return _Stop("diverged", f"training loss reached {loss:.3g} in epoch {epoch} (first "
                     f"batch: {first:.3g}); lower the learning rate or enable grad_clip")
    return None


def _epoch_metrics(run: _Run, epoch: int, trained: _Epoch) -> Metrics:
    """The epoch's training figures and its validation metrics (`evaluate`)."""
    metrics: Metrics = {"epoch": epoch, "train_loss": trained.train_loss}
    if epoch == 1 and run.state.first_loss is not None:  # studies.search.loop.learning reads it
        metrics["first_train_loss"] = run.state.first_loss
        metrics["epoch_steps"] = run.batches.steps
    if trained.accuracy is not None:
        metrics["train_accuracy"] = trained.accuracy
    metrics |= evaluate(run.model, run.data, run.batches, scoring=run.scoring)
    metrics |= {
        "lr": run.optimizer.param_groups[0]["lr"],
        "grad_norm": trained.grad_norm,
        "epoch_seconds": trained.seconds,
        "samples_per_second": trained.seen / trained.seconds,
    }
    if run.device.type == "cuda":  # the trial's peak so far (execute resets it per trial)
        metrics["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(run.device) / 2**20
    return metrics


def _update_state(run: _Run, epoch: int, metrics: Metrics) -> None:
    """`epoch` is done; early stopping counts the epochs since the objective improved."""
    value = metrics[run.scoring.objective]
    score = value if run.scoring.direction == "maximize" else -value
    if score > run.state.best:
        run.state.best, run.state.since_best = score, 0
    else:
        run.state.since_best += 1
    run.state.epoch = epoch


def _stop_after(run: _Run, epoch: int, stopped: bool) -> _Stop | None:
    """Why the run ends after `epoch`, if it does: the caller stopped it (`stopped`), or
    the objective has not improved for `patience` epochs."""
    if stopped:
        return _Stop("stopped", f"stopped by the caller after epoch {epoch}")
    patience, since = run.cfg.patience, run.state.since_best
    if patience and since >= patience:
        return _Stop("early_stopped", f"no improvement in {run.scoring.objective} for {since} epochs")
    return None


def _ended(outcome: TrainOutcome, epoch: int, stop: _Stop) -> TrainOutcome:
    outcome.status, outcome.epoch, outcome.message = stop.status, epoch, stop.message
    outcome.partial = stop.partial
    return outcome
