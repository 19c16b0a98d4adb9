"""A multi-label dataset: each handwritten digit tagged with the properties of its value.

A digit may have any number of the tags (7 is odd, at least 5 and prime), so the model
answers yes or no per tag: binary cross-entropy on the logits, judged by macro-F1 (the
F1 of each tag, averaged, so a rare tag counts as much as a common one).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.datasets import load_digits

from stagetune.workers.data import DataSettings, RawData, register_dataset

# tag -> the digits that have it
TAGS: dict[str, frozenset[int]] = {
    "even": frozenset({0, 2, 4, 6, 8}),
    "at_least_5": frozenset({5, 6, 7, 8, 9}),
    "prime": frozenset({2, 3, 5, 7}),
    "closed_loop": frozenset({0, 6, 8, 9}),
    "square": frozenset({0, 1, 4, 9}),
}


class TagKnobs(BaseModel):
    """The dataset's options: how many of the tags to predict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tags: int = Field(len(TAGS), ge=1, le=len(TAGS), description="the first N tags of TAGS")


def tag_matrix(digits: np.ndarray, tags: int) -> np.ndarray:
    """(N, tags) float {0, 1}: whether each digit has each tag."""
    sets = list(TAGS.values())[:tags]
    return np.array([[d in s for s in sets] for d in digits], dtype=np.float32)


@register_dataset("digit_tags", knobs=TagKnobs, loss="bce_with_logits", metrics=("macro_f1",))
def digit_tags(*, settings: DataSettings, tags: int = len(TAGS)) -> RawData:
    """scikit-learn's 8x8 digits, each tagged even / at least 5 / prime / closed loop / square."""
    digits = load_digits()
    x = (digits.images[:, None] / 16.0).astype(np.float32)  # (N, 1, 8, 8) in [0, 1]
    return RawData(x, tag_matrix(digits.target, tags), "multilabel", is_image=True)
