"""Planted bugs: broken datasets and models that a new user could write by mistake, for
bench/planted_bugs.py and tests/studies/test_planted_bugs.py.

Every one is digits (scikit-learn's 8×8 images, the data of examples/digits.yaml) or the
convnet of that spec, with one thing wrong. Datasets are registered as `planted_<bug>`,
models as `planted_<bug>`; `BUGS` in bench/planted_bugs.py says which stage should catch
each and with what words. Load it like any plugin (`STAGETUNE_PLUGINS=planted`,
`STAGETUNE_PLUGINS_DIR=bench/plugins`) or import it once per process.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torchvision.transforms import v2

from stagetune.workers.augment import register_augmentation
from stagetune.workers.config import ModelConfig
from stagetune.workers.data import Dataset, DataSettings, RawData, register_dataset
from stagetune.workers.losses import register_loss
from stagetune.workers.models import MODELS, register_model


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """digits as (N, 1, 8, 8) float32 images and integer labels, as the built-in has them."""
    bunch = load_digits()
    return bunch.images[:, None].astype(np.float32), bunch.target.astype(np.int64)


def _images(x: np.ndarray, y: np.ndarray) -> RawData:
    return RawData(x, y, "classification", is_image=True)


# --- datasets: the data is wrong, the model is the healthy convnet --------------------------


@register_dataset("planted_shuffled_labels")
def shuffled_labels(*, settings: DataSettings) -> RawData:
    """Labels permuted against the images (a shuffle of one array and not the other)."""
    x, y = _digits()
    return _images(x, np.random.default_rng(0).permutation(y))


@register_dataset("planted_leaked_val")
def leaked_val(*, settings: DataSettings) -> RawData:
    """Every image in twice (a dataset concatenated with itself before the split), so
    about 80% of validation rows have their copy in training."""
    x, y = _digits()
    return _images(np.concatenate([x, x]), np.concatenate([y, y]))


@register_dataset("planted_conflicting_labels")
def conflicting_labels(*, settings: DataSettings) -> RawData:
    """The first 300 images in again with the next class as their label (a merge of two
    annotation passes that disagree)."""
    x, y = _digits()
    return _images(np.concatenate([x, x[:300]]), np.concatenate([y, (y[:300] + 1) % 10]))


@register_dataset("planted_nan_features")
def nan_features(*, settings: DataSettings) -> RawData:
    """5% of the images miss three pixels (NaN, as a failed decode or an empty cell
    leaves them); the channel's mean and std, and so every standardised value, turn NaN."""
    x, y = _digits()
    x = x.copy()
    rows = np.random.default_rng(0).choice(len(x), size=len(x) // 20, replace=False)
    x[rows, 0, 3, 2:5] = np.nan
    return _images(x, y)


@register_dataset("planted_nan_table")
def nan_table(*, settings: DataSettings) -> RawData:
    """digits as a 64-feature table in which 5% of the rows miss three features (NaN, as
    pandas reads an empty CSV cell); the study's model is the mlp, which reads tables."""
    x, y = _digits()
    table = x.reshape(len(x), -1).copy()
    rows = np.random.default_rng(0).choice(len(table), size=len(table) // 20, replace=False)
    table[np.ix_(rows, np.array([20, 28, 36]))] = np.nan
    return RawData(table, y, "classification")


@register_dataset("planted_constant_inputs")
def constant_inputs(*, settings: DataSettings) -> RawData:
    """Every image blank (a preprocessing step that overwrote the pixels with zeros)."""
    x, y = _digits()
    return _images(np.zeros_like(x), y)


@register_dataset("planted_labels_from_one")
def labels_from_one(*, settings: DataSettings) -> RawData:
    """Labels 1..10 instead of 0..9 (an off-by-one from a 1-based label file): the model
    gets an 11th output for a class 0 that never occurs."""
    x, y = _digits()
    return _images(x, y + 1)


@register_dataset("planted_label_from_input")
def label_from_input(*, settings: DataSettings) -> RawData:
    """The wrong label column: the label is whether the centre pixel is above its median,
    a column of the inputs themselves, so the task is trivial and says nothing about the
    digit."""
    x, _ = _digits()
    centre = x[:, 0, 3, 4]
    return _images(x, (centre > np.median(centre)).astype(np.int64))


@register_dataset("planted_noisy_labels")
def noisy_labels(*, settings: DataSettings) -> RawData:
    """20% of the labels replaced by a random class (a careless annotation pass): about
    18% are wrong, in both splits."""
    x, y = _digits()
    rng = np.random.default_rng(0)
    hit = rng.random(len(y)) < 0.2
    y = y.copy()
    y[hit] = rng.integers(0, 10, int(hit.sum()))
    return _images(x, y)


@register_dataset("planted_swapped_class")
def swapped_class(*, settings: DataSettings) -> RawData:
    """30% of the 3s labelled 5 (an annotator who confuses the two, one way)."""
    x, y = _digits()
    threes = np.flatnonzero(y == 3)
    y = y.copy()
    y[threes[np.random.default_rng(0).random(len(threes)) < 0.3]] = 5
    return _images(x, y)


@register_dataset("planted_imbalanced")
def imbalanced(*, settings: DataSettings) -> RawData:
    """Healthy, though it looks suspicious: zero against every other digit, the zeros kept
    to 5% (95/5). Accuracy's chance level is 0.95; a model can still beat it."""
    x, y = _digits()
    zero, rest = np.flatnonzero(y == 0), np.flatnonzero(y != 0)
    keep = np.sort(np.concatenate([zero[:round(len(rest) * 0.05 / 0.95)], rest]))
    return _images(x[keep], (y[keep] == 0).astype(np.int64))


@register_dataset("planted_tiny")
def tiny(*, settings: DataSettings) -> RawData:
    """Healthy, though small: 200 rows of digits (160 to train on)."""
    x, y = _digits()
    return _images(x[:200], y[:200])


# --- models: the data is right, the model is wrong ------------------------------------------


class _Wrap(nn.Module):
    """`inner` with a function applied to its input (`before`) or to its output."""

    def __init__(self, inner: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor],
                 before: bool = False) -> None:
        super().__init__()
        self.inner, self.fn, self.before = inner, fn, before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.fn(x)) if self.before else self.fn(self.inner(x))


def _convnet(data: Dataset, cfg: ModelConfig) -> nn.Module:
    return MODELS.get("convnet")(data, cfg)


def _plain_mlp(data: Dataset, cfg: ModelConfig, depth: int, act: type[nn.Module]
               ) -> nn.Sequential:
    """Linear layers of `cfg.width` units and `act`, no normalisation, PyTorch's init."""
    layers: list[nn.Module] = [nn.Flatten()]
    features = math.prod(data.input_shape)
    for _ in range(depth):
        layers += [nn.Linear(features, cfg.width), act()]
        features = cfg.width
    return nn.Sequential(*layers, nn.Linear(features, data.num_outputs))


@register_model("planted_softmax_twice")
def softmax_twice(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """The convnet ending in a softmax, fed to cross-entropy, which applies its own."""
    return _Wrap(_convnet(data, cfg), lambda out: out.softmax(-1))


@register_model("planted_logits_x50")
def logits_x50(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """The convnet's logits multiplied by 50 (a temperature divided instead of multiplied)."""
    return _Wrap(_convnet(data, cfg), lambda out: 50 * out)


@register_model("planted_frozen")
def frozen(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """The convnet with every parameter frozen (requires_grad_(False) left from a
    feature-extraction experiment)."""
    return _convnet(data, cfg).requires_grad_(False)


@register_model("planted_detached")
def detached(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """The convnet's output detached from the graph (a .detach() left in forward)."""
    return _Wrap(_convnet(data, cfg), lambda out: out.detach())


@register_model("planted_input_ignored")
def input_ignored(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """The convnet fed zeros instead of its input (the wrong variable in forward): it can
    learn the class prior and nothing else."""
    return _Wrap(_convnet(data, cfg), torch.zeros_like, before=True)


@register_model("planted_dead_relu")
def dead_relu(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """A two-layer ReLU MLP whose first layer's biases are -10: its units never turn on."""
    model = _plain_mlp(data, cfg, 2, nn.ReLU)
    first = model[1]
    assert isinstance(first, nn.Linear)
    nn.init.constant_(first.bias, -10.0)
    return model


@register_model("planted_unnormalised")
def unnormalised(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """A two-layer ReLU MLP (no normalisation) that multiplies its input by 255, as code
    written for raw 0..255 pixels that undoes the loader's standardisation does."""
    return _Wrap(_plain_mlp(data, cfg, 2, nn.ReLU), lambda x: 255 * x, before=True)


@register_model("planted_deep_sigmoid")
def deep_sigmoid(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """Twelve sigmoid layers, no normalisation, no skip connections: gradients vanish."""
    return _plain_mlp(data, cfg, 12, nn.Sigmoid)


# --- the training step: the model breaks an invariant of the step ---------------------------


class _RunningStatsBatchNorm2d(nn.BatchNorm2d):
    """A batch norm that normalises with its running statistics while training too (a
    custom forward passing training=False), so it neither normalises by the batch nor
    updates its statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)


class _Remembers(nn.Module):
    """The convnet's logits plus half the mean of the previous training batch's (detached):
    a tensor kept across steps that changes what each step computes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.previous: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if not self.training:
            return out
        previous, self.previous = self.previous, out.detach().mean(0, keepdim=True)
        return out if previous is None else out + 0.5 * previous


@register_model("planted_running_stats_norm")
def running_stats_norm(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """The convnet whose batch norms use their running statistics in training."""
    model = _convnet(data, cfg)
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = _RunningStatsBatchNorm2d
    return model


@register_model("planted_norm_eval_in_forward")
def norm_eval_in_forward(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """The convnet with its batch norms put in eval mode at every forward ("keep the
    statistics fixed", left in although they train)."""
    inner = _convnet(data, cfg)

    def freeze(x: torch.Tensor) -> torch.Tensor:
        for module in inner.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return x
    return _Wrap(inner, freeze, before=True)


@register_model("planted_stale_tensor")
def stale_tensor(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """The convnet adding the previous batch's mean logits to this batch's."""
    return _Remembers(_convnet(data, cfg))


@register_model("planted_frozen_top_block")
def frozen_top_block(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """The convnet with its top conv block frozen (a requires_grad_(False) on the wrong
    block) while the stem and the head learn."""
    model = _convnet(data, cfg)
    blocks = model.blocks
    assert isinstance(blocks, nn.Sequential)
    blocks[-1].requires_grad_(False)
    return model


@register_model("planted_eval_dropout")
def eval_dropout(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """The convnet with input dropout written F.dropout(x, 0.1, training=True): on in
    evaluation too, so validation scores are noisy."""
    return _Wrap(_convnet(data, cfg), lambda x: F.dropout(x, 0.1, training=True), before=True)


class _MixesSamples(nn.Module):
    """The convnet behind a reshape that reads a (B, C, H, W) batch as (H, B, C, W) and
    permutes it back: a view where a permute was meant, so each sample's rows come from
    other samples of the batch."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return self.inner(x.reshape(h, b, c, w).permute(1, 2, 0, 3))


@register_model("planted_batch_mixing")
def batch_mixing(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """The convnet with a reshape that mixes samples across the batch."""
    return _MixesSamples(_convnet(data, cfg))


@register_model("planted_linear")
def linear(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """Healthy, though it cannot beat the linear baseline: a linear softmax model."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data.input_shape), data.num_outputs))


# --- a loss and an augmentation of the user's own ----------------------------------------------


@register_loss("planted_nll_on_logits", expected=lambda data: math.log(data.num_classes),
               kinds=("classification",))
def nll_on_logits(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy written as nll_loss on the raw outputs: the log_softmax is missing."""
    return F.nll_loss(out, y)


@register_augmentation("planted_tiny_zoom")
def tiny_zoom(data: Dataset) -> Callable[[torch.Tensor], torch.Tensor]:
    """A zoom that keeps 2-8% of the image's area: scale meant as a share of the side
    (0.15-0.3 squared), so the digit is mostly out of the frame."""
    return v2.RandomResizedCrop(tuple(data.input_shape[1:]), scale=(0.02, 0.08), antialias=True)


@register_model("planted_small_init")
def small_init(data: Dataset, cfg: ModelConfig) -> nn.Module:
    """Six ReLU layers, no normalisation, every weight drawn from N(0, 0.01) ("small random
    numbers"): the signal shrinks some tenfold per layer."""
    model = _plain_mlp(data, cfg, 6, nn.ReLU)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)
    return model
