"""Label quality: how many training labels look wrong, estimated from out-of-sample predictions.

A quick model (PCA to at most `COMPONENTS` dimensions, then a logistic regression) is fitted
in `FOLDS`-fold cross-validation on at most `ROWS` of the training rows the data check read,
so every row gets a predicted distribution from a model that never saw its label. Confident
learning (cleanlab, Northcutt et al., JAIR 2021) turns those into an estimated share of wrong
labels (`cleanlab.count.num_label_issues`) and the rows most likely wrong
(`cleanlab.filter.find_label_issues`, ranked by self-confidence).

A weak model also disagrees with many labels, so the estimate alone cannot tell noise from a
hard task (mnist1d: a linear model misses 67% of clean labels, and confident learning calls
65% of them wrong). What tells them apart is where the disagreement falls. Hardness lives
in the hard inputs: the model is right about nearly all of the inputs it is surest of, and
wrong more often as its confidence falls. Label noise does not depend on the input: a
relabelled sample is as likely among the easy inputs as among the hard ones, so the labels
disagree with the model's surest answers about as often as with the rest.

**Rule.** `floor` is the share of labels that disagree with the model among the `TOP`
(10%) rows it is surest of, `spread` how much more the `HALF` (50%) surest disagree than
`floor`. Random label noise warns when
- the floor reaches `NOISE_MIN` (5%) and lies 3 standard errors clear of zero,
- the floor holds at least `FLAT` (2) times the spread: it does not come from hardness;
- confident learning's estimate also reaches `NOISE_MIN`;
- the floor stays at most `MAX_FLOOR` (30%): a quick model wrong about more of its surest
  answers is too weak to judge. (Added after the held-out cases: 4 classes of 2 clusters
  each, clean, where a linear model is equally unsure everywhere, floor 55% and no spread.)
Structured noise (one class often labelled as another) is the same rule within the rows
predicted as one class `a`: among its `PAIR_TOP` (25%) surest, the share labelled `b`
reaches `PAIR_MIN` (20%), as does confident learning's share of true `a` labelled `b`, 3
standard errors clear of zero, holds at least `FLAT` times its rise over all rows
predicted `a`, and is at least twice the share of `b`'s surest rows labelled `a` (a hard
pair is confused both ways; a relabelled one, one way). Pairs are judged
only where the floor is below `NOISE_MIN` or the noise rule fired: a weak model's confusions
look like pairs. The share reported is confident learning's (its joint of given and true
labels). `PAIR_MIN` is a fifth because Fashion-MNIST's shirts, clean but hard, carry
pullover labels in 18% of a quick model's surest shirts (2,000 rows; confident learning:
14%); 30% of digits' 3s relabelled 5 reach 24% and 27%. Measured
(tests/workers/test_label_quality.py): healthy digits, wine, breast cancer and Fashion-MNIST
have floors of 0-1%; mnist1d, clean and hard, a floor of 24% with a spread of 31%; 10%
random noise on digits, a floor of 10% and no spread.

Only classification is judged; regression and multi-label get an "info" finding.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from stagetune.workers.matrix import as_matrix

ROWS = 4000  # training rows the quick model sees: seconds, not minutes, on one core
COMPONENTS = 64
FOLDS = 5
TOP, HALF = 0.10, 0.50
NOISE_MIN = 0.05
MAX_FLOOR = 0.30
PAIR_TOP, PAIR_MIN = 0.25, 0.20
FLAT = 2.0
SE = 3.0
EXAMPLES = 10
SMOOTHING = 0.1  # the stopgap's label_smoothing

Finding = dict[str, Any]


def label_quality(task: str, num_classes: int, x: torch.Tensor, y: torch.Tensor) -> Finding:
    """The `label_noise` finding for the training rows `x`, `y` (the data check's sample)."""
    if task != "classification":
        return _finding("info", f"Label noise is estimated for classification only (this is {task}).")
    x_np = as_matrix(x, ROWS)
    y_np = y[:ROWS].numpy().astype(int)
    counts = np.bincount(y_np, minlength=num_classes)
    folds = min(FOLDS, int(counts[counts > 0].min()))
    if folds < 2 or (counts > 0).sum() < 2:
        return _finding("info", "Too few rows per class to estimate label noise by cross-validation.")
    proba = _cross_val_proba(x_np, y_np, num_classes, folds)
    return _judge(y_np, proba, len(x))


def _cross_val_proba(x: np.ndarray, y: np.ndarray, num_classes: int, folds: int) -> np.ndarray:
    components = min(COMPONENTS, x.shape[1], len(x) - len(x) // folds - 1)
    model = make_pipeline(PCA(components, random_state=0), LogisticRegression(max_iter=300))
    # One BLAS thread: on a model this small, threads only contend (mnist1d: 0.1 s on one,
    # 6 s on two of a busy 2-core machine).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        seen = cross_val_predict(model, x, y, method="predict_proba",
                                 cv=StratifiedKFold(folds, shuffle=True, random_state=0))
    proba = np.full((len(y), num_classes), 1e-12)  # columns for classes the sample lacks
    proba[:, np.unique(y)] = seen
    return proba / proba.sum(1, keepdims=True)


def _judge(y: np.ndarray, proba: np.ndarray, read: int) -> Finding:
    from cleanlab.count import estimate_joint, num_label_issues  # heavy: imported when used
    from cleanlab.filter import find_label_issues

    present = np.unique(y)
    sub = proba[:, present] / proba[:, present].sum(1, keepdims=True)
    local = np.searchsorted(present, y)
    estimate = float(num_label_issues(local, sub) / len(y))
    # one process: cleanlab's pool hands its workers the probabilities through a module
    # global, which only a forked child sees (under spawn: NameError 'pred_probs_by_class');
    # on a few thousand rows a pool gains nothing anyway
    ranked = find_label_issues(local, sub, return_indices_ranked_by="self_confidence", n_jobs=1)
    floor, spread, n_top = _floor(y, proba)
    noisy = floor >= NOISE_MIN and floor - SE * math.sqrt(floor * (1 - floor) / n_top) > 0 \
        and floor >= FLAT * spread and estimate >= NOISE_MIN and floor <= MAX_FLOOR
    # Pairs are judged only where the surest answers are otherwise right: a weak model's
    # confusions (mnist1d, linear) look like pairs, label noise or not.
    pairs = _pairs(y, proba) if noisy or floor < NOISE_MIN else []
    if pairs:  # each pair's share of its true class, from confident learning's joint
        joint = estimate_joint(local, sub)  # [given label, true label]
        where = {int(c): i for i, c in enumerate(present)}
        for p in pairs:
            a, b = where.get(p["true"]), where.get(p["labelled"])
            if a is not None and b is not None and joint[:, a].sum() > 0:
                p["share"] = float(joint[b, a] / joint[:, a].sum())
        pairs = [p for p in pairs if p["share"] >= PAIR_MIN]
    figures = {"estimate": estimate, "rows": len(y), "read": read, "floor": floor,
               "spread": spread, "issues": len(ranked),
               "examples": [int(i) for i in ranked[:EXAMPLES]], "pairs": pairs[:3],
               "cv_accuracy": float((proba.argmax(1) == y).mean()), "rule": (
                   f"warns when labels disagree with at least {NOISE_MIN:.0%} of a quick model's "
                   f"surest {TOP:.0%} of answers, {FLAT:g}x more than its errors grow on harder inputs")}
    if not noisy and not pairs:
        return _finding("passed", _clean(figures), **figures)
    return _finding("warned", _sentence(figures, noisy, pairs),
                    fixes=[{"set": {"label_smoothing": SMOOTHING}, "why": (
                        "a stopgap for noisy labels until they are cleaned")}], **figures)


def _clean(f: dict[str, Any]) -> str:
    if f["floor"] < NOISE_MIN:
        return (f"Labels agree with a quick model's surest answers ({f['floor']:.1%} disagree "
                f"among its top {TOP:.0%}): no sign of label noise.")
    if f["floor"] > MAX_FLOOR:
        return (f"A quick model is wrong about {f['floor']:.0%} of even its surest answers: too "
                "weak to tell label noise from a hard task, so label noise is not judged.")
    return (f"A quick model disagrees with {f['floor']:.0%} of the labels even among its "
            f"surest answers, and with {f['spread']:.0%} more on harder inputs: errors that grow "
            "with difficulty belong to a hard task, not to noisy labels (confident learning's "
            f"{f['estimate']:.0%} wrong labels says how weak the quick model is).")


def _floor(y: np.ndarray, proba: np.ndarray) -> tuple[float, float, int]:
    """(disagreement among the TOP surest rows, its rise up to the HALF surest, TOP's rows)."""
    order = np.argsort(-proba.max(1), kind="stable")
    wrong = proba.argmax(1)[order] != y[order]
    n_top, n_half = max(1, int(len(y) * TOP)), max(1, int(len(y) * HALF))
    floor = float(wrong[:n_top].mean())
    return floor, float(wrong[:n_half].mean()) - floor, n_top


def _pairs(y: np.ndarray, proba: np.ndarray) -> list[dict[str, Any]]:
    """Structured noise: (true a, labelled b) pairs that pass the per-class rule, worst first."""
    predicted, sure = proba.argmax(1), proba.max(1)
    rows = {int(a): np.flatnonzero(predicted == a) for a in np.unique(predicted)}
    top = {a: r[np.argsort(-sure[r], kind="stable")][:max(1, int(len(r) * PAIR_TOP))]
           for a, r in rows.items()}
    found = []
    for a in rows:
        for b in np.unique(y[top[a]]):
            if b == a:
                continue
            rate, overall = float((y[top[a]] == b).mean()), float((y[rows[a]] == b).mean())
            clear = rate - SE * math.sqrt(rate * (1 - rate) / len(top[a])) > 0
            back = float((y[top[int(b)]] == a).mean()) if int(b) in top else 0.0
            # one way: b's surest rows rarely carry label a, where a hard pair is confused
            # both ways
            if rate >= PAIR_MIN and clear and rate >= FLAT * (overall - rate) and back < rate / 2:
                found.append({"true": int(a), "labelled": int(b), "share": rate,
                              "rows": int((y[rows[a]] == b).sum())})
    return sorted(found, key=lambda p: -p["share"])


def _sentence(f: dict[str, Any], noisy: bool, pairs: list[dict[str, Any]]) -> str:
    said = []
    if noisy:
        said.append(
            f"About {f['estimate']:.0%} of the training labels look wrong ({f['issues']} of the "
            f"{f['rows']:,} rows a quick model checked, e.g. rows {f['examples'][:5]}): they "
            f"disagree with {f['floor']:.0%} of its surest answers, as often as with the rest, "
            "which is label noise, not a hard task.")
    for p in pairs[:2]:
        said.append(
            f"Class {p['true']} is labelled {p['labelled']} in ~{p['share']:.0%} of its samples "
            f"(structured label noise: {p['rows']} rows that look like {p['true']} carry "
            f"label {p['labelled']}, far more than the other way round).")
    return " ".join(said) + (
        " A network fits wrong labels as easily as right ones, so training longer will not "
        "help and the validation score is capped. Re-label or drop these rows (the finding "
        f"lists them); as a stopgap, set label_smoothing: {SMOOTHING:g} in the spec.")


def _finding(verdict: str, message: str, **figures: Any) -> Finding:
    return {"check": "label_noise", "verdict": verdict, "message": message, **figures}
