"""The knobs a trial can set, split into training and model configuration.

Both are pydantic models so that a bad value gets a message naming the knob and
what is allowed; `parse_params` is the one door from a flat parameter dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stagetune.workers.errors import ConfigError
from stagetune.workers.registry import Registry

Optimizer = Literal["sgd", "sgd_nesterov", "adam", "adamw", "rmsprop"]
Schedule = Literal["constant", "step", "cosine", "warmup_cosine", "one_cycle"]
Norm = Literal["batch", "layer", "group", "instance", "none"]
Activation = Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu"]
Init = Literal["default", "xavier", "kaiming", "orthogonal"]
Skip = Literal["none", "residual", "dense", "highway"]
Pooling = Literal["max", "avg", "none"]
Transfer = Literal["none", "feature_extraction", "top_blocks", "full"]
AUGMENTATIONS = ("flip", "crop", "cutout", "randaugment")  # built in (workers.augment)
# A user's own: a factory `(dataset) -> (one normalised sample) -> sample`, registered with
# `register_augmentation` (workers.augment) and named in `augment` like the built-in ones.
# Held here, torch-free, so that a spec naming one validates wherever its plugin is loaded.
AUGMENT_PLUGINS: Registry[Any] = Registry("augmentation")


class _Knobs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainConfig(_Knobs):
    """How a model is trained: optimiser, schedule, regularisation, batching."""

    # 0 is allowed: it is how a probe shows a model that cannot learn.
    lr: float = Field(3e-3, ge=0, le=100)
    optimizer: Optimizer = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    schedule: Schedule = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)
    batch_size: int = Field(64, ge=1, le=65536)
    grad_clip: float = Field(0.0, ge=0, description="max gradient norm; 0 turns clipping off")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: str = Field("none", description="'none' or '+'-joined: flip, crop, cutout, randaugment")
    patience: int = Field(0, ge=0, description="epochs without improvement before stopping; 0 = off")

    @model_validator(mode="after")
    def _check_augment(self) -> TrainConfig:
        parts = [p for p in self.augment.split("+") if p and p != "none"]
        known = (*AUGMENTATIONS, *AUGMENT_PLUGINS)
        unknown = [p for p in parts if p not in known]
        if unknown:
            raise ValueError(
                f"augment: unknown '{'+'.join(unknown)}'; use 'none' or '+'-joined "
                f"{', '.join(known)}"
            )
        return self

    @property
    def augmentations(self) -> tuple[str, ...]:
        return tuple(p for p in self.augment.split("+") if p and p != "none")


class ModelConfig(_Knobs):
    """How a model is built; each architecture reads the knobs that apply to it."""

    depth: int = Field(2, ge=1, le=200)
    width: int = Field(32, ge=1, le=8192)
    kernel: int = Field(3, ge=1, le=15)
    padding: int | None = Field(None, ge=0, description="None keeps the size ('same')")
    stride: int = Field(1, ge=1, le=4)
    pooling: Pooling = "max"
    norm: Norm = "batch"
    activation: Activation = "relu"
    init: Init = "default"
    dropout: float = Field(0.0, ge=0, lt=1)
    skip: Skip = "none"
    residual: bool = Field(False, description="shorthand for skip='residual'")
    arch: str = Field("resnet18", description="architecture name, for models 'torchvision' "
                      "and 'timm'")
    weights: str | None = Field(None, description="state_dict file to start from, in the data "
                                "folder (a path relative to it)")
    transfer: Transfer = "none"
    unfreeze_blocks: int = Field(1, ge=0)
    layer_lr_decay: float = Field(1.0, gt=0, le=1)
    head_hidden: int = Field(128, ge=0, description="hidden units of a replaced head; 0 = linear")

    @property
    def skip_kind(self) -> str:
        return "residual" if self.residual and self.skip == "none" else self.skip


TRAIN_KNOBS = tuple(TrainConfig.model_fields)
MODEL_KNOBS = tuple(ModelConfig.model_fields)
KNOWN_PARAMS = tuple(sorted(TRAIN_KNOBS + MODEL_KNOBS))


def parse_params(params: Mapping[str, Any]) -> tuple[TrainConfig, ModelConfig]:
    """Split a flat parameter dict into the two configs, or raise a ConfigError that lists names."""
    unknown = sorted(set(params) - set(KNOWN_PARAMS))
    if unknown:
        raise ConfigError(
            f"unknown parameter {', '.join(repr(u) for u in unknown)}; "
            f"known: {', '.join(KNOWN_PARAMS)}"
        )
    train = {k: v for k, v in params.items() if k in TRAIN_KNOBS}
    model = {k: v for k, v in params.items() if k in MODEL_KNOBS}
    return _build(TrainConfig, train), _build(ModelConfig, model)


def _build(cls: type[_Knobs], values: dict[str, Any]) -> Any:
    try:
        return cls(**values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: 'name: what is allowed (got value)'."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "value"
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        suffix = f" (got {_shown(got)})" if got is not None and not isinstance(got, dict) else ""
        lines.append(f"{where}: {msg}{suffix}" if not msg.startswith(f"{where}:") else msg + suffix)
    return "; ".join(lines)


def _shown(value: Any, limit: int = 80) -> str:
    """A short repr: a 5,000-digit number or a megabyte string is not echoed back
    (and Python refuses to print an int of over 4,300 digits)."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        return f"a number of about {int(value.bit_length() * 0.30103)} digits"
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."
