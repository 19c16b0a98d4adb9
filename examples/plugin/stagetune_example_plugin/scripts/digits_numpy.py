"""A training program stagetune knows only by its command line: a one-hidden-layer
network in NumPy on scikit-learn's digits, printing one JSON line of metrics per epoch.

It stands for any program in any language: stagetune fills in the arguments, reads the
JSON lines from stdout, stops it with SIGTERM on prune or cancel, and keeps what it
leaves in --checkpoint-dir after each epoch's line, to continue the run later. stagetune
packs that folder when it reads the line, while this program goes on: so each epoch's
weights get a file of their own, written whole (a temporary file, then a rename), and the
one the last line announced is kept until the next line is out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, required=True, help="the last epoch to train")
    parser.add_argument("--start-epoch", type=int, default=0, help="epochs already trained")
    parser.add_argument("--horizon", type=int, default=None, help="epochs the schedule spans")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-dir", type=Path, required=True)
    return parser.parse_args()


def main() -> None:
    args = arguments()
    digits = load_digits()
    x = digits.data / 16.0
    x_train, x_val, y_train, y_val = train_test_split(x, digits.target, test_size=0.2,
                                                      random_state=0, stratify=digits.target)
    rng = np.random.default_rng(args.seed)
    saved = args.checkpoint_dir / f"weights-{args.start_epoch}.npz"
    if args.start_epoch > 0 and saved.exists():
        weights = dict(np.load(saved))
    else:
        weights = {"w1": rng.normal(0, math.sqrt(2 / x.shape[1]), (x.shape[1], args.hidden)),
                   "b1": np.zeros(args.hidden), "w2": rng.normal(0, 0.01, (args.hidden, 10)),
                   "b2": np.zeros(10)}
    horizon = args.horizon or args.epochs
    steps = math.ceil(len(x_train) / args.batch_size)
    for epoch in range(args.start_epoch + 1, args.epochs + 1):
        order = np.random.default_rng(args.seed * 1000 + epoch).permutation(len(x_train))
        losses = []
        for step in range(steps):
            done = (epoch - 1 + step / steps) / horizon  # cosine decay over the horizon
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
            batch = order[step * args.batch_size:(step + 1) * args.batch_size]
            losses.append(sgd_step(weights, x_train[batch], y_train[batch], lr, args.weight_decay))
        val_loss, val_accuracy = evaluate(weights, x_val, y_val)
        keep(weights, args.checkpoint_dir, epoch)  # before the line: it says this epoch is kept
        print(json.dumps({"epoch": epoch, "train_loss": float(np.mean(losses)),
                          "val_loss": val_loss, "val_accuracy": val_accuracy}), flush=True)


def keep(weights: dict[str, np.ndarray], folder: Path, epoch: int) -> None:
    """This epoch's weights as weights-<epoch>.npz, whole or not at all; the one before the
    last line's goes (the last line's may still be being packed)."""
    partial = folder / f"weights-{epoch}.partial.npz"
    np.savez(partial, **weights)
    os.replace(partial, folder / f"weights-{epoch}.npz")
    (folder / f"weights-{epoch - 2}.npz").unlink(missing_ok=True)


def forward(weights: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.maximum(x @ weights["w1"] + weights["b1"], 0)
    logits = hidden @ weights["w2"] + weights["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return hidden, probs / probs.sum(axis=1, keepdims=True)


def sgd_step(weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, lr: float,
             weight_decay: float) -> float:
    """One step of SGD on the cross-entropy; returns the batch's loss."""
    hidden, probs = forward(weights, x)
    loss = float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())
    delta = probs.copy()
    delta[np.arange(len(y)), y] -= 1
    delta /= len(y)
    grads = {"w2": hidden.T @ delta, "b2": delta.sum(0)}
    back = (delta @ weights["w2"].T) * (hidden > 0)
    grads |= {"w1": x.T @ back, "b1": back.sum(0)}
    for name, grad in grads.items():
        weights[name] -= lr * (grad + weight_decay * weights[name] * name.startswith("w"))
    return loss


def evaluate(weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    _, probs = forward(weights, x)
    loss = float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())
    return loss, float((probs.argmax(1) == y).mean())


if __name__ == "__main__":
    main()
