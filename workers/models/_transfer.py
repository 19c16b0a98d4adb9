"""Transfer learning: load local weights, replace the head, freeze, and layer-wise LRs.

A model's body is the ordered list of blocks from `transfer_blocks()` (bottom to
top) when it defines one, else its top-level children that hold parameters; its
head is the last `nn.Linear` it contains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from stagetune.workers.config import ModelConfig
from stagetune.workers.data import get_data_settings
from stagetune.workers.errors import ConfigError
from stagetune.workers.models._layers import activation


def body_blocks(model: nn.Module) -> list[nn.Module]:
    """The body's blocks, bottom to top, without the head."""
    head = find_head(model)
    if callable(getattr(model, "transfer_blocks", None)):
        blocks = list(model.transfer_blocks())  # type: ignore[operator]
    else:
        blocks = [m for m in model.children() if any(True for _ in m.parameters())]
    return [b for b in blocks if b is not head and not _contains(b, head)]


def find_head(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("transfer learning needs a model whose output layer is nn.Linear")
    return linears[-1]


def load_weights(model: nn.Module, path: str, skip_head: bool) -> None:
    """Load a state_dict file (relative to the data folder, or absolute) into `model`; a
    mismatch names the offending keys. Messages show the path as given, never the server's
    folders (a study's message reaches API clients)."""
    file = get_data_settings().data_dir / Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"weights file {path!r} does not exist; give a local state_dict file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for a file it cannot read
        raise ConfigError(f"weights file {path!r} is not a PyTorch state_dict "
                          f"({exc.__class__.__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = _wrapped(model, state)
    head_keys = _head_keys(model) if skip_head else set()
    own = {k: v for k, v in model.state_dict().items() if k not in head_keys}
    state = {k: v for k, v in state.items() if k not in head_keys}
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [f"{k}: file has {tuple(v.shape)}, model has {tuple(own[k].shape)}"
                 for k, v in state.items() if k in own and v.shape != own[k].shape]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ConfigError(f"weights file {path!r} does not match the model: {shown}")
    model.load_state_dict(state, strict=False)


def _wrapped(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """A torchvision or timm network's own state_dict, keyed for our wrapper (`net.`)."""
    own = model.state_dict()
    if own and all(k.startswith("net.") for k in own) and \
            not any(k.startswith("net.") for k in state):
        return {f"net.{k}": v for k, v in state.items()}
    return state


def apply_transfer(model: nn.Module, cfg: ModelConfig, outputs: int) -> None:
    """Load weights, and for a transfer strategy replace the head and freeze blocks."""
    if cfg.transfer != "none" and not cfg.weights:
        raise ConfigError(f"transfer '{cfg.transfer}' needs weights=PATH (a local state_dict file)")
    if cfg.weights:
        load_weights(model, cfg.weights, skip_head=cfg.transfer != "none")
    if cfg.transfer == "none":
        return
    _replace_head(model, cfg, outputs)
    blocks = body_blocks(model)
    trainable = {"feature_extraction": 0, "top_blocks": cfg.unfreeze_blocks,
                 "full": len(blocks)}[cfg.transfer]
    for block in blocks[: max(len(blocks) - trainable, 0)]:
        block.requires_grad_(False)


def _replace_head(model: nn.Module, cfg: ModelConfig, outputs: int) -> None:
    """The usual recipe: dropout, a hidden layer, the output layer."""
    old = find_head(model)
    if cfg.head_hidden:
        new = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(old.in_features, cfg.head_hidden),
                            activation(cfg.activation), nn.Linear(cfg.head_hidden, outputs))
    else:
        new = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(old.in_features, outputs))
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float, layer_lr_decay: float
) -> list[dict[str, Any]]:
    """Optimizer groups: no weight decay on norms and biases; with `layer_lr_decay` < 1,
    one group per block with lr x decay^(blocks from the top), the head at full lr."""
    owner: dict[int, int] = {}
    if layer_lr_decay < 1:
        blocks = body_blocks(model)
        for depth, block in enumerate(reversed(blocks), start=1):
            for p in block.parameters():
                owner[id(p)] = depth
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        depth, decay = owner.get(id(p), 0), p.ndim > 1
        group = groups.setdefault((depth, decay), {
            "params": [], "lr": lr * layer_lr_decay**depth,
            "weight_decay": weight_decay if decay else 0.0,
            "name": f"{'head' if depth == 0 else f'block-{depth}'}{'' if decay else '/no_decay'}",
        })
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def set_train_mode(model: nn.Module, training: bool = True) -> None:
    """Like model.train(), but frozen norm layers keep their running statistics (one
    without parameters, affine=False, is not frozen: it trains)."""
    model.train(training)
    if training:
        for m in model.modules():
            params = list(m.parameters())
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and params and not any(
                p.requires_grad for p in params
            ):
                m.eval()


def _head_keys(model: nn.Module) -> set[str]:
    head = find_head(model)
    for name, module in model.named_modules():
        if module is head:
            return {f"{name}.{k}" for k in module.state_dict()}
    return set()


def _contains(block: nn.Module, target: nn.Module) -> bool:
    return any(m is target for m in block.modules())
