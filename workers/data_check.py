"""The data check: sample-based checks of the splits before any training.

It reads at most `samples` items of each split (20,000; fewer where their float32 copy
would pass `SAMPLE_BYTES`), the first ones (both splits are in a seeded random order, so
they are a random sample, and an index is an item's position in its split). What it finds:

- leaks: validation samples whose exact copy is in training. Exact copies are found by
  hashing each sample's bytes. The samples are normalised float32 tensors, and the
  normalisation is deterministic, so equal raw samples hash alike. Near-copies are found
  by hashing a coarse quantisation, each value rounded to the nearest `NEAR_STEP` (half a
  training standard deviation). That catches a copy with small noise, or a re-encoded
  one, unless a value falls just across a rounding edge. When training is sampled, the
  leak share is estimated as the leaks found over the validation rows read, divided by the
  share of training read.
  **Rule:** an estimated exact-leak share above `leak_share` (1% of validation) fails.
  Fewer exact leaks, or near-copies above `leak_share`, warn.
- duplicates within training: exact copies above `DUPLICATE_SHARE` (1%) of the rows
  read warn.
- conflicting labels: the same input (exact hash, both splits) with different labels.
  Any warn for classification and multi-label; for regression they are noise in the
  targets and only reported.
- class balance: the training and validation class shares (label shares, multi-label),
  and the smallest class. They warn when the two priors differ by a total variation
  above `PRIOR_SHIFT`, when a class is missing from a split, or when a class has fewer
  than `RARE_ROWS` training rows read (too few to learn from). A skewed prior alone is
  healthy: see imbalance.
- non-finite values (NaN, inf) in the inputs or targets warn. So do constant features
  of a table. A constant pixel of an image, such as the blank border of a digit, is
  normal and only reported.
- label noise (classification): the share of training labels that look wrong, from a quick
  model's cross-validated predictions (`workers.label_quality`, which states its rule): random
  noise and one class labelled as another warn, with the rows to re-label.
- imbalance (classification): the majority class's share of validation is chance level for
  accuracy. At `IMBALANCED` (80%) or more, with accuracy as the objective, a note says so and suggests
  macro F1 as the objective (a structured fix: `fixes`, as the probes give). Imbalance alone
  is healthy: it is reported, not warned.
- input scale: the raw mean and spread (`data.mean`, `data.std`, which the loader
  standardises with). This is information, not a warning, because every dataset reaches
  the model standardised with its training statistics. It warns only when standardised
  values still lie beyond `OUTLIER_Z` standard deviations (heavy tails).

The verdict is the worst finding's. A failure is the leak rule alone. The stage decides
whether that stops the study (`stages.data_check.allow_leaks`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import defaultdict
from itertools import chain
from typing import Any

import torch

from stagetune.workers.augment_check import augmentation_check
from stagetune.workers.data import AnyDataset, load_dataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.knobs import parse_task_params
from stagetune.workers.label_quality import label_quality
from stagetune.workers.request import TrialRequest, TrialResult
from stagetune.workers.target_leak import one_feature_decides

log = logging.getLogger(__name__)

MAX_SAMPLES = 20_000  # per split
SAMPLE_BYTES = 256 * 2**20  # float32 read per split at most
LEAK_SHARE = 0.01  # of validation: above it, exact leaks fail the check
NEAR_STEP = 0.5  # near-duplicate hash: values rounded to this many training stds
DUPLICATE_SHARE = 0.01  # of the training rows read: above it, copies within training warn
PRIOR_SHIFT = 0.1  # total variation between the training and validation class shares
RARE_ROWS = 10  # a class with fewer training rows read than this warns: too few to learn
OUTLIER_Z = 50.0  # standardised values beyond this many stds warn
IMBALANCED = 0.8  # majority share from which accuracy's objective gets a balanced suggestion
EXAMPLES = 5  # index examples kept per finding
OPTIONS = ("samples", "leak_share", "augmentations")
NO_DATASET = ("No dataset: the trainer loads its own data, so there is nothing to check "
              "before training. Name the dataset in task.dataset to have its splits checked.")

Finding = dict[str, Any]


def check_data(request: TrialRequest) -> TrialResult:
    """Run every check on a sample of `request.task.dataset`'s splits."""
    samples, leak_share = _options(request)
    task = request.task
    if task.dataset is None:
        return TrialResult("skipped", message=NO_DATASET, probe={"epochs_equivalent": 0.0})
    data = load_dataset(task.dataset, parse_task_params(task, request.params).dataset_options)
    result = check_dataset(data, samples, leak_share, request.objective,
                           list(request.options.get("augmentations", [])))
    log.info("data check on %s: %s %s", task.dataset, result.status, result.message)
    return result


def check_dataset(data: AnyDataset, samples: int = MAX_SAMPLES,
                  leak_share: float = LEAK_SHARE, objective: str | None = None,
                  augmentations: list[str] | None = None) -> TrialResult:
    """The checks on a loaded split: passed, warned or failed, each finding in
    `probe["findings"]` with its verdict, sentence and figures; the findings' spec edits in
    `probe["fixes"]`. `objective` (default accuracy) decides the imbalance note;
    `augmentations`, the ones the study can use, are checked for keeping the labels."""
    x_t, y_t = data.sample("train", _rows(data, samples))
    x_v, y_v = data.sample("val", _rows(data, samples))
    hashed = {"train": _hashes(x_t), "val": _hashes(x_v)}
    constant = _constant(data, x_t)
    findings = [
        _leaks(data, hashed, x_t, x_v, leak_share),
        _train_duplicates(hashed["train"]),
        _conflicts(data, hashed, y_t, y_v),
        _balance(data, y_t, y_v),
        _finite(x_t, x_v, y_t, y_v),
        constant,
        _scale(data, x_t, x_v),
    ]
    if constant["verdict"] == "failed":  # every input the same: the copies follow from it
        findings.remove(constant)
        findings.insert(0, constant)
    if data.task == "classification":
        findings += [one_feature_decides(x_t, y_t, data.num_classes),
                     label_quality(data.task, data.num_classes, x_t, y_t)]
        findings += _imbalance(y_v, data.num_classes, objective)
    augmented = augmentation_check(data, augmentations or [])
    findings += [augmented] if augmented is not None else []
    status = _worst([f["verdict"] for f in findings])
    probe = {"findings": findings, "train_rows": len(x_t), "val_rows": len(x_v),
             "train_size": data.train_size, "val_size": data.val_size,
             "epochs_equivalent": 0.0,
             "fixes": [fix for f in findings for fix in f.pop("fixes", [])]}
    return TrialResult(status, message=_message(status, findings, len(x_t), len(x_v)),
                       probe=probe)


def _options(request: TrialRequest) -> tuple[int, float]:
    unknown = sorted(set(request.options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"data_check has no option {', '.join(repr(u) for u in unknown)}; "
                          f"allowed: {', '.join(OPTIONS)}")
    samples = int(request.options.get("samples", MAX_SAMPLES))
    share = float(request.options.get("leak_share", LEAK_SHARE))
    if samples < 10:
        raise ConfigError(f"data_check samples must be at least 10 (got {samples})")
    if not 0 <= share <= 1:
        raise ConfigError(f"data_check leak_share must lie in [0, 1] (got {share})")
    return samples, share


def _rows(data: AnyDataset, samples: int) -> int:
    per_row = 4 * math.prod(data.input_shape)
    return max(1, min(samples, SAMPLE_BYTES // per_row))


def _hashes(x: torch.Tensor) -> dict[str, list[bytes]]:
    """Per row: the hash of its exact bytes, and of its values rounded to NEAR_STEP."""
    flat = x.reshape(len(x), -1).contiguous()
    coarse = torch.round(flat / NEAR_STEP).clamp(-127, 127).to(torch.int8)
    return {"exact": [_digest(r) for r in flat.numpy()],
            "near": [_digest(r) for r in coarse.numpy()]}


def _digest(row: Any) -> bytes:
    return hashlib.blake2b(row.tobytes(), digest_size=16).digest()


def _index(hashes: list[bytes]) -> dict[bytes, list[int]]:
    where: dict[bytes, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        where[h].append(i)
    return where


def _finding(check: str, verdict: str, message: str, **figures: Any) -> Finding:
    return {"check": check, "verdict": verdict, "message": message, **figures}


def _leaks(data: AnyDataset, hashed: dict[str, dict[str, list[bytes]]], x_t: torch.Tensor,
           x_v: torch.Tensor, leak_share: float) -> Finding:
    train_exact, train_near = _index(hashed["train"]["exact"]), _index(hashed["train"]["near"])
    exact = [(train_exact[h][0], i) for i, h in enumerate(hashed["val"]["exact"])
             if h in train_exact]
    near = [(train_near[h][0], i) for i, (h, e) in
            enumerate(zip(hashed["val"]["near"], hashed["val"]["exact"], strict=True))
            if h in train_near and e not in train_exact]
    covered = len(x_t) / data.train_size  # the share of training read
    share, near_share = (min(len(found) / len(x_v) / covered, 1.0) for found in (exact, near))
    figures = {"exact": len(exact), "near": len(near), "share": share, "near_share": near_share,
               "examples": [list(p) for p in exact[:EXAMPLES]],
               "near_examples": [list(p) for p in near[:EXAMPLES]], "rule": (
                   f"fails above {leak_share:.1%} of validation exactly copied into training")}
    read = _read(len(x_t), data.train_size, len(x_v), data.val_size)
    if not exact and near_share <= leak_share:
        return _finding("leaks", "passed", f"No validation sample is copied into training{read}"
                        f" ({len(near)} near-copies).", **figures)
    pairs = ", ".join(f"val {v} = train {t}" for t, v in exact[:3])
    sentence = (f"{len(exact)} of {len(x_v):,} validation samples{read} are exact copies of "
                f"training samples ({share:.1%} of validation{' estimated' if covered < 1 else ''}"
                f"{'; e.g. ' + pairs if pairs else ''})")
    if near:
        sentence += f", and {len(near)} more are near-copies ({near_share:.1%})"
    fix = (": validation scores measure memory, not generalisation. Remove the copies "
           "from one split (deduplicate before splitting, or split by source: patient, "
           "user, file).")
    verdict = "failed" if share > leak_share else "warned"
    return _finding("leaks", verdict, sentence + fix, **figures)


def _read(n_t: int, size_t: int, n_v: int, size_v: int) -> str:
    if n_t >= size_t and n_v >= size_v:
        return ""
    return f" (checked {n_t:,} of {size_t:,} training and {n_v:,} of {size_v:,} validation rows)"


def _train_duplicates(hashed: dict[str, list[bytes]]) -> Finding:
    groups = [g for g in _index(hashed["exact"]).values() if len(g) > 1]
    copies = sum(len(g) - 1 for g in groups)
    share = copies / len(hashed["exact"])
    figures = {"copies": copies, "share": share, "groups": len(groups),
               "examples": [g[:4] for g in groups[:EXAMPLES]]}
    if share <= DUPLICATE_SHARE:
        said = f"{copies} exact copies within training" if copies else "No exact copies within training"
        return _finding("train_duplicates", "passed", f"{said} ({share:.1%}).", **figures)
    return _finding("train_duplicates", "warned", (
        f"{copies} training samples ({share:.1%} of the {len(hashed['exact']):,} read) are exact "
        f"copies of others, in {len(groups)} groups (e.g. rows {groups[0][:4]}): they weigh "
        "those samples more in the loss and inflate the training score. Deduplicate the "
        "training data, or check that a join or an oversampling step did not repeat rows."),
        **figures)


def _label_key(y: torch.Tensor) -> bytes:
    return y.numpy().tobytes()


def _conflicts(data: AnyDataset, hashed: dict[str, dict[str, list[bytes]]], y_t: torch.Tensor,
               y_v: torch.Tensor) -> Finding:
    """Inputs seen more than once (either split) with labels that differ."""
    labels: dict[bytes, dict[bytes, list[str]]] = defaultdict(lambda: defaultdict(list))
    for split, ys in (("train", y_t), ("val", y_v)):
        for i, (h, y) in enumerate(zip(hashed[split]["exact"], ys, strict=True)):
            labels[h][_label_key(y)].append(f"{split} {i}")
    clashes = [sorted(chain.from_iterable(by.values())) for by in labels.values() if len(by) > 1]
    samples = sum(len(c) for c in clashes)
    figures = {"inputs": len(clashes), "samples": samples,
               "examples": [c[:4] for c in clashes[:EXAMPLES]]}
    if not clashes:
        return _finding("conflicting_labels", "passed",
                        "No input appears with two different labels.", **figures)
    where = "; ".join(", ".join(c[:3]) for c in clashes[:2])
    if data.task == "regression":
        return _finding("conflicting_labels", "info", (
            f"{len(clashes)} inputs appear with different targets ({samples} samples, e.g. "
            f"{where}): noise in the targets, which bounds the RMSE any model can reach."),
            **figures)
    return _finding("conflicting_labels", "warned", (
        f"{len(clashes)} inputs appear with different labels ({samples} samples, e.g. {where}): "
        "a model cannot fit both, and accuracy on them is capped. Check the labelling (a "
        "shuffle or a join that misaligned labels and inputs), and keep one label per input."),
        **figures)


def _balance(data: AnyDataset, y_t: torch.Tensor, y_v: torch.Tensor) -> Finding:
    if data.task == "regression":
        return _target_shift(y_t, y_v)
    if data.task == "multilabel":
        p_t, p_v = y_t.double().mean(0), y_v.double().mean(0)
        names = "label"
    else:
        p_t = torch.bincount(y_t, minlength=data.num_classes).double() / len(y_t)
        p_v = torch.bincount(y_v, minlength=data.num_classes).double() / len(y_v)
        names = "class"
    shift = float((p_t - p_v).abs().sum() / 2) if names == "class" \
        else float((p_t - p_v).abs().max())
    smallest = int(p_t.argmin())
    figures = {"train_shares": p_t.tolist(), "val_shares": p_v.tolist(), "shift": shift,
               "smallest": smallest, "smallest_share": float(p_t[smallest]),
               "largest_share": float(p_t.max())}
    problems = _balance_problems(names, p_t, p_v, shift, smallest, len(y_t))
    if not problems:
        return _finding("class_balance", "passed", (
            f"{names.capitalize()} shares agree between the splits (difference {shift:.2f}); the "
            f"smallest {names} ({smallest}) holds {float(p_t[smallest]):.1%} of training."),
            **figures)
    return _finding("class_balance", "warned", " ".join(problems), **figures)


def _balance_problems(names: str, p_t: torch.Tensor, p_v: torch.Tensor, shift: float,
                      smallest: int, rows_read: int) -> list[str]:
    out = []
    plural = "Classes" if names == "class" else "Labels"
    missing_t = [i for i in range(len(p_t)) if p_t[i] == 0]
    missing_v = [i for i in range(len(p_t)) if p_v[i] == 0 and p_t[i] > 0]
    if missing_t:
        out.append(f"{plural} {missing_t[:10]} never occur in training: a model cannot learn "
                   "them; check the labels' range, the 'classes' option or the split.")
    if missing_v:
        out.append(f"{plural} {missing_v[:10]} never occur in validation: their errors go "
                   "unmeasured; split stratified by label.")
    if shift > PRIOR_SHIFT:
        out.append(f"The {names} shares of training and validation differ by {shift:.2f} "
                   f"(above {PRIOR_SHIFT}): the validation score measures another mix; split "
                   "stratified by label, or reweight.")
    rows = round(float(p_t[smallest]) * rows_read)
    if names == "class" and 0 < rows < RARE_ROWS:
        out.append(f"Class {smallest} holds only {rows} of the {rows_read:,} training rows read "
                   f"({float(p_t[smallest]):.2%}; below {RARE_ROWS}), while the largest holds "
                   f"{float(p_t.max()):.0%}: too few to learn it from, and accuracy rewards "
                   "ignoring it. Collect more of it, or resample it; judge by a balanced "
                   "metric (val_macro_f1).")
    return out


def _imbalance(y_v: torch.Tensor, classes: int, objective: str | None) -> list[Finding]:
    """The majority share of validation, chance level for accuracy; at IMBALANCED or more,
    with accuracy the objective, a note and a balanced objective as a spec edit."""
    shares = torch.bincount(y_v, minlength=classes).double() / max(1, len(y_v))
    majority, share = int(shares.argmax()), float(shares.max())
    if share < IMBALANCED or (objective or "val_accuracy") != "val_accuracy":
        return []
    # macro F1 of answering the majority always: its class scores 2p / (1 + p), the rest 0
    constant_f1 = 2 * share / (1 + share) / max(1, int((shares > 0).sum()))
    return [_finding("imbalance", "info", (
        f"Class {majority} holds {share:.0%} of validation: answering it always scores accuracy "
        f"{share:.2f}, which is chance level here, and accuracy barely moves with the rarer "
        f"classes. Macro F1 weighs every class alike (the majority answer scores "
        f"{constant_f1:.2f}): judge the search by it (task.metrics: [macro_f1], task.objective: "
        "val_macro_f1)."), majority=majority, majority_share=share,
        macro_f1_of_majority=constant_f1, fixes=[{
            "set": {"task.metrics": ["macro_f1"], "task.objective": "val_macro_f1"},
            "why": f"class {majority} holds {share:.0%} of validation, so accuracy hides "
                   "the rare classes"}])]


def _target_shift(y_t: torch.Tensor, y_v: torch.Tensor) -> Finding:
    """Regression: the validation targets' mean in training standard deviations (finite
    targets only: non-finite ones are the `non_finite` finding's)."""
    y_t, y_v = (y[torch.isfinite(y)].double() for y in (y_t.flatten(), y_v.flatten()))
    if len(y_t) < 2 or len(y_v) < 2:
        return _finding("target_shift", "passed", "Too few finite targets to compare.")
    shift = float(y_v.mean() - y_t.mean())
    ratio = float(y_v.std() / y_t.std().clamp_min(1e-12))
    figures = {"shift": shift, "spread_ratio": ratio}
    if abs(shift) <= 0.5 and 0.5 <= ratio <= 2:
        return _finding("target_shift", "passed", (
            f"Validation targets lie {shift:+.2f} training stds from training's mean, with "
            f"{ratio:.2f} times its spread."), **figures)
    return _finding("target_shift", "warned", (
        f"Validation targets lie {shift:+.2f} training stds from training's mean, with "
        f"{ratio:.2f} times its spread: the splits hold different target ranges (a split by "
        "time or a sorted file?). Shuffle before splitting."), **figures)


def _finite(x_t: torch.Tensor, x_v: torch.Tensor, y_t: torch.Tensor, y_v: torch.Tensor
            ) -> Finding:
    x = torch.cat([x_t.reshape(len(x_t), -1), x_v.reshape(len(x_v), -1)])
    bad = ~torch.isfinite(x)
    features = bad.any(0).nonzero().flatten().tolist()
    values = int(bad.sum())
    labels = int((~torch.isfinite(torch.cat([y_t.double().reshape(len(y_t), -1),
                                               y_v.double().reshape(len(y_v), -1)]))).sum())
    figures = {"values": values, "features": features[:50], "labels": labels}
    if not values and not labels:
        return _finding("non_finite", "passed", "No NaN or inf in the inputs or labels.", **figures)
    parts = []
    if values:
        parts.append(f"{values:,} input values are NaN or inf, in {len(features)} "
                     f"feature{'s' if len(features) > 1 else ''} (e.g. {features[:5]})")
    if labels:
        parts.append(f"{labels:,} labels are NaN or inf")
    # failed, not warned: the study cannot run (the first NaN batch spoils every weight,
    # and the linear baseline refuses NaN inputs outright)
    return _finding("non_finite", "failed", (
        " and ".join(parts) + ": one reaches the loss as NaN and every update after it is "
        "lost (a feature's NaN also spoils its normalisation). Impute or drop them before "
        "training."), **figures)


def _constant(data: AnyDataset, x_t: torch.Tensor) -> Finding:
    flat = x_t.reshape(len(x_t), -1)
    same = (flat.amax(0) == flat.amin(0)) & torch.isfinite(flat[0])
    features = same.nonzero().flatten().tolist()
    figures = {"features": features[:50], "count": len(features), "of": flat.shape[1]}
    if not features:
        return _finding("constant_features", "passed", "No feature is constant.", **figures)
    if len(features) == flat.shape[1] and len(flat) > 1:
        return _finding("constant_features", "failed", (
            f"Every input is the same in the {len(flat):,} training rows read (all "
            f"{flat.shape[1]} {'pixels' if data.is_image else 'features'} constant): there "
            "is nothing to learn from. The loader returns a blank or a placeholder, or reads "
            "the wrong column; check a few inputs by eye."), **figures)
    if data.is_image:
        return _finding("constant_features", "info", (
            f"{len(features)} of {flat.shape[1]} pixel values never change in the training "
            "rows read (a blank border, as in digit images): normal for images."), **figures)
    return _finding("constant_features", "warned", (
        f"{len(features)} of {flat.shape[1]} features are constant in the {len(flat):,} "
        f"training rows read (features {features[:10]}): they carry no information, and "
        "standardised by a zero spread, a different value in validation becomes huge. Drop them."),
        **figures)


def _scale(data: AnyDataset, x_t: torch.Tensor, x_v: torch.Tensor) -> Finding:
    mean, std = data.mean.double().flatten(), data.std.double().flatten()
    finite = torch.isfinite(mean) & torch.isfinite(std) & (std > 1e-6)
    spread = (float(std[finite].min()), float(std[finite].max())) if finite.any() else (1.0, 1.0)
    magnitude = float(mean[finite].abs().max()) if finite.any() else 0.0
    decades = math.log10(spread[1] / spread[0]) if spread[0] > 0 else 0.0
    z = max(float(x.nan_to_num(0.0, posinf=0.0, neginf=0.0).abs().max()) for x in (x_t, x_v))
    figures = {"raw_mean_max": magnitude, "raw_std_min": spread[0], "raw_std_max": spread[1],
               "decades": decades, "max_abs_standardised": z}
    raw = (f"Raw {'channels' if data.is_image else 'features'} have means up to {magnitude:.3g} "
           f"and spreads from {spread[0]:.3g} to {spread[1]:.3g}")
    if z > OUTLIER_Z:
        return _finding("input_scale", "warned", (
            f"{raw}; after standardising with the training statistics some values still lie "
            f"{z:.0f} stds from the mean (above {OUTLIER_Z:g}): heavy tails or a feature nearly "
            "constant in training. Log-transform or clip those features."), **figures)
    if decades >= 2 or magnitude >= 1000:
        return _finding("input_scale", "info", (
            f"{raw} ({decades:.1f} orders of magnitude): the loader standardises each with the "
            "training statistics, so built-in models see unit scale; a model or trainer that "
            "reads the raw values must scale them itself."), **figures)
    return _finding("input_scale", "passed", f"{raw}; standardised, they stay within {z:.1f} "
                    "stds.", **figures)


def _worst(verdicts: list[str]) -> str:
    return "failed" if "failed" in verdicts else "warned" if "warned" in verdicts else "passed"


PHRASES = {"leaks": "leaks", "train_duplicates": "duplicates",
           "conflicting_labels": "conflicting labels", "class_balance": "class imbalance",
           "target_shift": "shifted targets",
           "non_finite": "NaN/inf values", "constant_features": "constant features",
           "input_scale": "extreme values", "label_noise": "label noise",
           "augmentations": "label-breaking augmentations",
           "target_leak": "a label decided by one feature"}


def _message(status: str, findings: list[Finding], n_t: int, n_v: int) -> str:
    said = [f["message"] for f in findings if f["verdict"] in ("failed", "warned")]
    notes = [f["message"] for f in findings if f["verdict"] == "info"]
    if status != "passed":  # the notes stay in the findings: the problems come first
        return " ".join(said)
    skewed = any(f["check"] == "imbalance" for f in findings)  # its note says how skewed
    clean = [PHRASES[f["check"]] for f in findings if f["verdict"] == "passed"
             and not (skewed and f["check"] == "class_balance")]
    listed = ", ".join(clean[:-1]) + f" or {clean[-1]}" if len(clean) > 1 else clean[0]
    return " ".join([f"No {listed} in {n_t:,} training and {n_v:,} validation rows.", *notes])
