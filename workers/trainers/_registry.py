"""The trainer registry: a user's own training function, run in place of the built-in loop."""

from __future__ import annotations

from collections.abc import Callable

from workers.registry import Registry

TrainerFunction = Callable[..., object]

TRAINERS: Registry[TrainerFunction] = Registry("trainer")
