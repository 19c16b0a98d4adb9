"""The trainer registry: a user's own training function, run in place of the built-in loop.

Two kinds of entry share it: a Python function `fn(ctx)` (`register_trainer`) and a
program started per trial (`register_command`). Both are registered by plugin code
only; a request names a trainer, never a function or a command line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from stagetune.workers.errors import ConfigError
from stagetune.workers.registry import Entry, Registry

if TYPE_CHECKING:
    from stagetune.workers.trainers._context import TrainerContext
    from stagetune.workers.trainers._parts import TrainerParts

TrainerFunction = Callable[["TrainerContext"], object]
"""fn(ctx) -> None: trains, calling ctx.report(epoch, metrics) after each epoch."""

PartsFunction = Callable[["TrainerContext"], "TrainerParts"]
"""parts(ctx) -> TrainerParts(model, loss, batches): what the probes run on."""

TRAINERS: Registry[TrainerFunction] = Registry("trainer")

DIRECTIONS = ("maximize", "minimize")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")  # a variable's name, or a prefix and *


def register_trainer(name: str, *, knobs: type[BaseModel] | None = None,
                     parts: PartsFunction | None = None, objective: str | None = None,
                     direction: str | None = None,
                     metrics: Sequence[str] | None = None) -> Callable[[TrainerFunction],
                                                                         TrainerFunction]:
    """Register `fn(ctx)` as trainer `name`.

    `knobs`: a pydantic model of the trainer's own tunable values (ctx.knobs); `parts`:
    `parts(ctx) -> TrainerParts` so that init_check, overfit and lr_probe can run;
    `objective`/`direction`: the metric it reports that studies are judged by when the
    spec names none; `metrics`: the metric names it reports, for the registry listing.
    """
    _check_declared(name, objective, direction)
    if parts is not None and not callable(parts):
        raise ConfigError(f"trainer '{name}': parts must be a function parts(ctx) -> "
                          f"TrainerParts (got {parts!r})")

    def decorator(fn: TrainerFunction) -> TrainerFunction:
        if not callable(fn):
            raise ConfigError(f"trainer '{name}': register a function fn(ctx) (got {fn!r})")
        TRAINERS.register(name, knobs=knobs, kind="function", parts=parts, objective=objective,
                          direction=direction, metrics=tuple(metrics or ()))(fn)
        return fn

    return decorator


def register_command(name: str, argv: Sequence[str], *, knobs: type[BaseModel] | None = None,
                     env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                     objective: str | None = None, direction: str | None = None,
                     metrics: Sequence[str] | None = None,
                     description: str = "",
                     pass_env: Sequence[str] = ()) -> Entry[TrainerFunction]:
    """Register a program as trainer `name`: `argv` (no shell) with placeholders such as
    `{lr}`, `{epochs}`, `{seed}`, `{device}`, `{start_epoch}`, `{checkpoint_dir}` filled in
    per trial; it prints JSON lines of metrics on stdout (see workers.trainers._command).
    `env`: variables set for it; `pass_env`: names (or `PREFIX*`) it gets from the worker's
    environment beyond PATH, the locale, HOME, TMPDIR and its devices (it gets no other).
    `description` is what the registry API says of it (its argv is never shown)."""
    from stagetune.workers.trainers._command import CommandTrainer  # no torch: plain subprocess

    _check_declared(name, objective, direction)
    if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
        raise ConfigError(f"command '{name}': argv must be a non-empty list of strings, the "
                          "program first (no shell)")
    if isinstance(pass_env, str) or not all(
            isinstance(n, str) and ENV_NAME.fullmatch(n) for n in pass_env):
        raise ConfigError(f"command '{name}': pass_env must be a list of environment variable "
                          f"names, or a prefix ending in * (e.g. ['WANDB_API_KEY', 'HF_*']); "
                          f"got {pass_env!r}")
    command = CommandTrainer(name, tuple(argv), dict(env or {}),
                             None if cwd is None else Path(cwd), knobs, tuple(pass_env))
    command.check_placeholders()
    TRAINERS.register(name, knobs=knobs, kind="command", parts=None, objective=objective,
                      direction=direction, metrics=tuple(metrics or ()),
                      argv=tuple(argv), description=description or
                      f"the command '{Path(argv[0]).name}'")(command)
    return TRAINERS.entry(name)


def _check_declared(name: str, objective: str | None, direction: str | None) -> None:
    if direction is not None and direction not in DIRECTIONS:
        raise ConfigError(f"trainer '{name}': direction must be one of {', '.join(DIRECTIONS)} "
                          f"(got {direction!r})")
    if direction is not None and objective is None:
        raise ConfigError(f"trainer '{name}': a direction needs the objective it applies to")
