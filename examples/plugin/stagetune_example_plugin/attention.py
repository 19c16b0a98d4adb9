"""A small self-attention classifier for MNIST-1D, with a knob of its own: `num_heads`.

The built-in knobs reach it in its ModelConfig (depth: encoder layers, dropout); the
declared ones, validated by `AttentionKnobs`, arrive as the factory's third argument.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from stagetune.workers.config import ModelConfig
from stagetune.workers.data import Dataset
from stagetune.workers.errors import ConfigError
from stagetune.workers.models import register_model


class AttentionKnobs(BaseModel):
    """What this model understands beyond the built-in knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_heads: int = Field(2, ge=1, le=8, description="attention heads per layer")
    head_dim: int = Field(8, ge=4, le=64, description="width of each head")


class SequenceAttention(nn.Module):
    """A strided convolution cuts the sequence into tokens, a pre-norm transformer
    encoder mixes them, and the mean token is classified."""

    def __init__(self, length: int, outputs: int, cfg: ModelConfig, knobs: AttentionKnobs) -> None:
        super().__init__()
        dim = knobs.num_heads * knobs.head_dim  # every head count divides the width
        self.embed = nn.Conv1d(1, dim, kernel_size=5, stride=2, padding=2)
        tokens = (length + 1) // 2
        self.position = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, knobs.num_heads, dim_feedforward=2 * dim,
                                           dropout=cfg.dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, outputs)
        # small initial logits: the init check expects a loss near ln C
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).transpose(1, 2) + self.position  # (batch, tokens, dim)
        return self.head(self.norm(self.encoder(tokens).mean(dim=1)))


@register_model("seq_attention", knobs=AttentionKnobs)
def seq_attention(data: Dataset, cfg: ModelConfig, knobs: AttentionKnobs) -> nn.Module:
    """Self-attention over a 1-D sequence (input (1, length)), e.g. mnist1d."""
    channels, length = data.input_shape
    if channels != 1:
        raise ConfigError(f"seq_attention takes sequences of shape (1, length); "
                          f"{data.name} has inputs {data.input_shape}")
    return SequenceAttention(length, data.num_outputs, cfg, knobs)
