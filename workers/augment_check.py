"""Do the augmentations keep the labels? Measured on a sample, for each augmentation the
spec can use (fixed, or among `augment`'s choices), before any training.

An augmentation keeps a label when its output still shows the class. So each one is
applied, alone, to a sample of training and of validation images, and a quick model
(PCA to 64 dimensions, then an MLP of one hidden layer) is fitted on the augmented
training images and scored on the augmented validation images, against the same model
fitted and scored on the clean ones. Fitting on augmented images, not only scoring on
them, is the point: a model trained on clean images is not shift-invariant, so a crop of
one pixel, which keeps every label, already costs it much of its accuracy; trained on the
crops, it learns them. What it cannot learn is a label that the augmented image no longer
shows (a zoom that leaves the digit out of the frame, two images blended under one's
label). A linear model is too weak for this: trained on digits' one-pixel crops it keeps
only 0.62 of its clean lead, near a blend's 0.49; the MLP keeps 0.88.

**Rule.** `kept` is the share of the clean model's margin over chance (the majority rate)
that the augmented one keeps. An augmentation warns when `kept` < KEEP (one half): it
removes more than half of what the images say about their labels. Measured on digits
(seed 0, 1,000 training and 500 validation rows): flip keeps 0.95, crop 0.88, cutout 0.97,
randaugment 0.62, a random rotation of up to half a turn 0.62; two images blended half
and half under the first's label 0.49 (by construction the label is right about half the
time), and a zoom onto 2-8% of the image 0.04 (tests/workers/test_new_kinds.py). The
blend sits on the line: this check catches augmentations that destroy most of the label,
not subtler ones. Not judged: a clean model too close to chance to compare against.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from stagetune.workers.augment import build_augmenter
from stagetune.workers.data import AnyDataset
from stagetune.workers.matrix import as_matrix

TRAIN_ROWS, VAL_ROWS = 1000, 500  # some 0.6 s of fitting per augmentation on one core
COMPONENTS, HIDDEN = 64, 64
KEEP = 0.5
MIN_MARGIN = 0.2  # the clean model's lead over chance below which nothing is judged

Finding = dict[str, Any]


def augmentation_check(data: AnyDataset, names: list[str], seed: int = 0) -> Finding | None:
    """The `augmentations` finding for `names` (built-in or registered), or None where
    there is nothing to check (no augmentation, or not an image classification)."""
    if not names or not data.is_image or data.task != "classification":
        return None
    generator = torch.Generator().manual_seed(seed)
    x_t, y_t = data.sample("train", TRAIN_ROWS, generator)
    x_v, y_v = data.sample("val", VAL_ROWS, generator)
    chance = float(np.bincount(y_v.numpy()).max() / len(y_v))
    clean = _fit_and_score(x_t, y_t, x_v, y_v)
    if clean - chance < MIN_MARGIN:
        return _finding("info", f"The augmentations are not checked: a quick linear model "
                                f"reaches only {clean:.2f} against chance {chance:.2f} on the "
                                "clean images, too little to compare with.", clean=clean)
    scores = {}
    for name in names:
        augment = build_augmenter((name,), data)
        assert augment is not None
        with torch.random.fork_rng():  # the augmentations' draws, the same every run
            torch.manual_seed(seed)
            x_ta, x_va = augment(x_t), augment(x_v)
        scores[name] = _fit_and_score(x_ta, y_t, x_va, y_v)
    kept = {name: (score - chance) / (clean - chance) for name, score in scores.items()}
    broken = [name for name in names if kept[name] < KEEP]
    figures = {"clean": clean, "chance": chance, "augmented": scores, "kept": kept}
    if not broken:
        listed = ", ".join(f"{n} {kept[n]:.2f}" for n in names)
        return _finding("passed", f"The augmentations keep the labels (share of the clean "
                                  f"accuracy's lead over chance kept: {listed}).", **figures)
    said = "; ".join(f"'{n}' reaches {scores[n]:.2f}, keeping {kept[n]:.0%} of it" for n in broken)
    return _finding("warned", (
        f"{_they(broken)} break the labels: a quick model fitted and scored on "
        f"augmented images does far worse than on clean ones ({clean:.2f} against chance "
        f"{chance:.2f}; {said}), so the augmented images no longer show their class. The "
        "network would train on wrong labels. Drop it from augment, or weaken it until the "
        "class stays visible."), **figures)


def _they(names: list[str]) -> str:
    quoted = ", ".join(f"'{n}'" for n in names)
    return f"The augmentation {quoted}" if len(names) == 1 else f"The augmentations {quoted}"


def _fit_and_score(x_t: torch.Tensor, y_t: torch.Tensor, x_v: torch.Tensor, y_v: torch.Tensor
                   ) -> float:
    """Validation accuracy of PCA + logistic regression fitted on (x_t, y_t)."""
    flat_t, flat_v = as_matrix(x_t), as_matrix(x_v)
    components = min(COMPONENTS, flat_t.shape[1], len(flat_t) - 1)
    model = make_pipeline(PCA(components, random_state=0),
                          MLPClassifier((HIDDEN,), max_iter=200, random_state=0))
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(flat_t, y_t.numpy())
        return float(model.score(flat_v, y_v.numpy()))


def _finding(verdict: str, message: str, **figures: Any) -> Finding:
    return {"check": "augmentations", "verdict": verdict, "message": message, **figures}
