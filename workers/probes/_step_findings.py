"""What `_step_invariants.measure` shows about a training step, as findings: each broken
invariant its own sentence, naming the modules or parameters, the cause and the fix."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stagetune.workers.probes._causes import Finding
from stagetune.workers.probes._step_invariants import (
    ALL_NORMS,
    DROPOUTS,
    NORMS,
    StepRecord,
    StepUnderTest,
    measure,
)

# Relative differences between what should be equal: on CPU float32 the two steps agree
# bit for bit and a batch's first half alone within ~1e-6. On CUDA the steps run with
# cuDNN's deterministic algorithms, but atomics (scatter, index_add) and a batch size's
# own bfloat16 kernels may remain: 1e-2, not yet measured on a GPU.
TOLERANCE = {"cpu": 1e-3, "cuda": 1e-2}
DOUBLED = 0.05  # the second step's gradients within 5% of twice the first's: accumulated
SHOWN = 3  # names listed in a sentence before "and N more"


def check_step(target: StepUnderTest, x: torch.Tensor, y: torch.Tensor
               ) -> tuple[list[Finding], dict[str, Any]]:
    """Run the step twice and the evaluation three times on (x, y)'s first samples; the
    findings and the figures they read."""
    record = measure(target, x, y)
    return judge_step(target, record), figures(record)


def judge_step(target: StepUnderTest, record: StepRecord) -> list[Finding]:
    """The findings, in the order a reader fixes them: leaks, parameters, modes, evaluation."""
    model = target.model
    device = next((p.device.type for p in model.parameters()), "cpu")
    tol = TOLERANCE.get(device, TOLERANCE["cuda"])
    modules = dict(model.named_modules())
    if record.error is not None and record.error[0] == 1:  # nothing else was measured
        return [f for f in [_leak(target, record, tol)] if f is not None]
    found = [_leak(target, record, tol), *_parameters(target, record),
             *_train_modes(modules, record), _statistics(modules, record),
             *_eval_modes(modules, record)]
    found += _evaluation(modules, record, tol, found)
    return [f for f in found if f is not None]


def figures(record: StepRecord) -> dict[str, Any]:
    """The figures the rules above read, for the probe's record."""
    return {"step_gradient_difference": _grad_difference(record),
            "eval_difference": _eval_differences(record)}


def _they(names: list[str], one: str, many: str) -> str:
    """`one` for a single name, else `many` (a verb or pronoun that agrees)."""
    return one if len(names) == 1 else many


def _names(names: list[str], what: str = "") -> str:
    shown = ", ".join(f"'{n or 'model'}'" for n in names[:SHOWN])
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{shown}{more}{f' ({what})' if what else ''}"


# --- one step's gradients against the same step's again --------------------------------


def _flat(grads: dict[str, torch.Tensor], names: list[str], like: dict[str, torch.Tensor]
          ) -> torch.Tensor:
    return torch.cat([grads[n].flatten() if n in grads else torch.zeros_like(like[n]).flatten()
                      for n in names])


def _grad_difference(record: StepRecord) -> float | None:
    """||second step's gradients - first's|| / ||first's||, over every parameter either got."""
    if record.error is not None:
        return None
    names = sorted(set(record.grads) | set(record.grads_again))
    like = {**record.grads_again, **record.grads}
    g1 = _flat(record.grads, names, like)
    scale = float(g1.norm()) if names else 0.0
    if not scale:
        return None
    return float((_flat(record.grads_again, names, like) - g1).norm()) / scale


def _leak(target: StepUnderTest, record: StepRecord, tol: float) -> Finding | None:
    if record.error is not None:
        which, error = record.error[0], record.error[1].split(". ")[0]
        earlier = "the first step's graph" if which == 2 else "the graph of an earlier pass"
        if "second time" in error or "freed" in error:
            return Finding("stale_graph", "failed", (
                f"A training step's backward ran into {earlier} ({error!r}): a tensor kept "
                f"across steps still holds its graph {_kept(record)}(a hidden state, a "
                "cached output or a running total of losses); detach it (.detach()) or "
                "rebuild it from each batch."))
        if which == 2:
            return Finding("step_leak", "failed", (
                f"The second training step failed where the first ran, from the same weights "
                f"({error!r}): state kept across steps {_kept(record)}breaks it; rebuild "
                "that state from each batch."))
        return Finding("step_error", "failed", (
            f"A training step of {target.owner} raised {error!r}, as training would: fix "
            "that before searching."))
    difference = _grad_difference(record)
    if difference is None or difference <= tol:
        return None
    doubled, other = _doubled(record, tol)
    if doubled and not other:
        everything = len(doubled) == sum(1 for g in record.grads.values() if g.any())
        return Finding("gradient_accumulation", "failed", (
            f"Gradients from the first step were still there at the second: from the same "
            f"weights and batch, the second step of {target.owner} had twice the first one's "
            "gradients, so each step adds its gradients to all the earlier ones; call "
            "optimizer.zero_grad() before loss.backward() in every step." if everything else
            f"The gradients of {_names(doubled)} from the first step were still there at the "
            f"second (twice the first one's, from the same weights and batch): nothing zeroes "
            "them between steps (optimizer.zero_grad() clears only the parameters the "
            "optimizer holds); build the optimizer over every parameter, or call "
            "model.zero_grad()."))
    return Finding("step_leak", "failed", (
        f"Two training steps on the same batch from the same weights and random state gave "
        f"gradients {difference:.1%} apart: state kept across steps {_kept(record)}changes "
        "what a step computes (a tensor cached from an earlier batch, a buffer that forward "
        "updates and then uses, a running total); compute it from each batch, or keep it "
        "out of the loss."))


def _doubled(record: StepRecord, tol: float) -> tuple[list[str], list[str]]:
    """The parameters whose second-step gradient differs from the first's: those where it
    is twice the first (accumulated), and the others."""
    doubled: list[str] = []
    other: list[str] = []
    for name in sorted(set(record.grads) | set(record.grads_again)):
        like = record.grads.get(name, record.grads_again.get(name))
        assert like is not None
        g1 = record.grads.get(name, torch.zeros_like(like))
        g2 = record.grads_again.get(name, torch.zeros_like(like))
        scale = float(g1.norm())
        if float((g2 - g1).norm()) <= tol * scale and g2.any() == g1.any():
            continue
        (doubled if scale and float((g2 - 2 * g1).norm()) <= DOUBLED * scale else other
         ).append(name)
    return doubled, other


def _kept(record: StepRecord) -> str:
    held = [*(f"buffer {b}" for b in record.buffers_changed),
            *(f"attribute {a}" for a in record.attributes_set)]
    return f"({', '.join(held[:SHOWN])}) " if held else ""


# --- parameters that should learn ---------------------------------------------------------


def _parameters(target: StepUnderTest, record: StepRecord) -> list[Finding]:
    """Parameters above the first one that learns but which do not learn themselves; a
    frozen or unoptimised bottom (a pretrained backbone) is by design, and so is a group
    at lr 0 or a frozen norm layer."""
    model, optimizer = target.model, target.optimizer
    owner = {f"{m_name}.{p_name}" if m_name else p_name: m_name
             for m_name, m in model.named_modules()
             for p_name, _ in m.named_parameters(recurse=False)}
    lr = ({id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
          if optimizer is not None else None)
    modules, why = dict(model.named_modules()), {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            if not isinstance(modules[owner[name]], ALL_NORMS):
                why[name] = "frozen"
        elif lr is not None and id(p) not in lr:
            why[name] = "not_optimised"
        elif lr is not None and lr[id(p)] == 0:
            continue
        elif name not in record.grads:
            why[name] = "no_gradient"
    learning = [n for n, p in model.named_parameters()
                if n in record.grads and (lr is None or lr.get(id(p), 0) > 0)]
    called = [record.order[owner[n]] for n in learning if owner[n] in record.order]
    if not called:  # nothing learns: the init check's no-gradient finding says why
        return []
    first = min(called)
    above = {n: w for n, w in why.items() if record.order.get(owner[n], -1) > first}
    found = [_not_learning(kind, [n for n, w in above.items() if w == kind], target.owner)
             for kind in ("not_optimised", "frozen", "no_gradient")]
    found.append(_no_update(record, learning, lr, model))
    return [f for f in found if f is not None]


def _not_learning(kind: str, names: list[str], owner: str) -> Finding | None:
    if not names:
        return None
    where = f"{_names(names)}, above layers that learn,"
    if kind == "not_optimised":
        return Finding("not_optimised", "failed", (
            f"The optimizer does not hold {where} although "
            f"{_they(names, 'it requires', 'they require')} gradients: no step can change "
            "them (an optimizer built over part of the model, or before a layer was "
            "replaced); build it over model.parameters() after the model is complete."))
    if kind == "frozen":
        return Finding("frozen_layer", "warned", (
            f"{where[0].upper()}{where[1:]} {_they(names, 'is', 'are')} frozen (requires_grad "
            f"False): {_they(names, 'it keeps its', 'they keep their')} initial values while "
            "the layers below learn, which is a mistake "
            "unless meant (freezing is for a pretrained bottom); call requires_grad_(True) "
            "on them."))
    return Finding("no_gradient", "warned", (
        f"{where[0].upper()}{where[1:]} got no gradient in a step of {owner}: the loss does "
        "not depend on them (a .detach(), .item() or torch.no_grad() in forward cuts them "
        "off, or their output is not used); keep the forward pass differentiable."))


def _no_update(record: StepRecord, learning: list[str], lr: dict[int, float] | None,
               model: nn.Module) -> Finding | None:
    params = dict(model.named_parameters())
    live = [n for n in learning if bool(record.grads[n].abs().sum() > 0)
            and (lr is None or lr.get(id(params[n]), 0) > 0)]
    if not live or any(record.moved.get(n) for n in live):
        return None
    return Finding("no_update", "failed", (
        f"A training step changed no weight although {len(live)} parameter tensors got "
        "a gradient at a positive learning rate: optimizer.step() is not called, or is "
        "called on another model's parameters; call it after loss.backward() in every "
        "step."))


# --- modes and running statistics ----------------------------------------------------------


def _mode_matters(module: nn.Module) -> bool:
    """Whether training and evaluation mode differ for this module."""
    if isinstance(module, DROPOUTS):
        return bool(module.p > 0)
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return bool(module.track_running_stats)
    return isinstance(module, NORMS) and getattr(module, "running_mean", None) is not None


def _frozen_on_purpose(module: nn.Module) -> bool:
    """A norm layer whose parameters are all frozen: kept in eval mode by design
    (workers.models.set_train_mode: its statistics stay those it was trained with)."""
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def _train_modes(modules: dict[str, nn.Module], record: StepRecord) -> list[Finding]:
    off = [n for n, training in record.train_modes.items() if not training
           and _mode_matters(modules[n]) and not _frozen_on_purpose(modules[n])]
    norms = [n for n in off if isinstance(modules[n], NORMS)]
    drops = [n for n in off if isinstance(modules[n], DROPOUTS)]
    why = ("something puts it in evaluation mode (an .eval() in forward or in a train() "
           "override, or no model.train() after evaluating); call model.train() before "
           "training steps and leave modes to it.")
    found = []
    if norms:
        found.append(Finding("eval_mode_in_training", "failed", (
            f"{_names(norms, type(modules[norms[0]]).__name__)} ran in evaluation mode "
            f"during the training step, so {_they(norms, 'it normalises', 'they normalise')} "
            "with running statistics instead of the batch's and never "
            f"update{_they(norms, 's', '')} them: {why}")))
    if drops:
        found.append(Finding("eval_mode_in_training", "warned", (
            f"{_names(drops, 'dropout')} ran in evaluation mode during the training step, "
            f"so {_they(drops, 'it drops', 'they drop')} nothing and "
            f"regularise{_they(drops, 's', '')} nothing: {why}")))
    return found


def _statistics(modules: dict[str, nn.Module], record: StepRecord) -> Finding | None:
    still = [n for n, moved in record.stats_moved.items()
             if not moved and record.train_modes.get(n)]
    if not still:
        return None
    what = _names(still, type(modules[still[0]]).__name__)
    if all(getattr(modules[n], "momentum", None) == 0 for n in still):
        return Finding("norm_statistics", "failed", (
            f"{what} did not update {_they(still, 'its', 'their')} running statistics in a "
            "training step (momentum 0), so evaluation normalises with the initial mean 0 "
            "and variance 1; leave momentum at its default, 0.1."))
    return Finding("norm_statistics", "failed", (
        f"{what} did not update {_they(still, 'its', 'their')} running statistics in a "
        f"training step although {_they(still, 'it is', 'they are')} in training mode: the "
        "forward normalises with the running statistics (F.batch_norm(..., "
        "training=False) or a forward of its own), not by the batch, while training; pass "
        "training=self.training, or use the torch.nn layer unchanged."))


def _eval_modes(modules: dict[str, nn.Module], record: StepRecord) -> list[Finding]:
    on = [n for n, training in record.eval_modes.items()
          if training and _mode_matters(modules[n])]
    norms = [n for n in on if isinstance(modules[n], NORMS)]
    drops = [n for n in on if isinstance(modules[n], DROPOUTS)]
    found = []
    if drops:
        found.append(Finding("train_mode_in_eval", "warned", (
            f"{_names(drops, 'dropout')} ran in training mode during evaluation, so "
            "evaluation drops units at random and its scores are noisy: call model.eval() "
            "before evaluating.")))
    if norms:
        found.append(Finding("train_mode_in_eval", "warned", (
            f"{_names(norms, type(modules[norms[0]]).__name__)} ran in training mode "
            f"during evaluation, so {_they(norms, 'it normalises', 'they normalise')} each "
            "evaluation batch by its own "
            "statistics and updates the running ones with validation data: call "
            "model.eval() before evaluating.")))
    return found


# --- evaluation -------------------------------------------------------------------------------


def _eval_differences(record: StepRecord) -> dict[str, float] | None:
    """Largest difference, relative to the largest output, between two evaluations of the
    batch (`repeat`) and between its first half alone and within the batch (`half`)."""
    outs = record.eval_outputs
    if len(outs) != 3 or outs[0].shape != outs[1].shape or outs[0].ndim == 0:
        return None
    first, again, half = outs
    if half.shape[1:] != first.shape[1:] or len(half) > len(first):
        return None
    scale = float(first.abs().max()) or 1.0
    return {"repeat": float((again - first).abs().max()) / scale,
            "half": float((half - first[:len(half)]).abs().max()) / scale}


def _evaluation(modules: dict[str, nn.Module], record: StepRecord, tol: float,
                found: list[Finding | None]) -> list[Finding]:
    differences = _eval_differences(record)
    if differences is None:
        return []
    explained = any(f is not None and f.cause == "train_mode_in_eval" for f in found)
    if differences["repeat"] > tol:
        if explained:
            return []
        return [Finding("eval_nondeterministic", "warned", (
            f"Two evaluations of the same batch gave outputs up to "
            f"{differences['repeat']:.1%} apart: evaluation runs something random "
            "(F.dropout(..., training=True), noise or sampling in forward), so its scores "
            "are noisy; make it depend on self.training."))]
    if differences["half"] <= tol or explained:
        return []
    batch_norms = [n for n, m in modules.items() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                   and m.running_mean is None and n in record.eval_modes]
    verb = "normalises" if len(batch_norms) == 1 else "normalise"
    cause = (f"{_names(batch_norms, 'track_running_stats=False')} {verb} each evaluation "
             "batch by its own statistics, having no running ones; set "
             "track_running_stats=True" if batch_norms else
             "a statistic over the batch runs in forward (a mean or norm over dim 0), or "
             "a view or reshape mixes samples (where a permute or transpose was meant); "
             "compute each sample's outputs from that sample alone")
    return [Finding("eval_batch_dependent", "warned", (
        f"A sample's outputs in evaluation depend on the rest of its batch (up to "
        f"{differences['half']:.1%} apart between the batch and its first half alone): "
        f"{cause}."))]
