"""A name -> factory registry, the one pattern behind datasets, models, trainers, losses
and metrics. An entry may declare its knobs: a pydantic model of the values it takes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from stagetune.workers.errors import ConfigError

F = TypeVar("F", bound=Callable[..., object])


@dataclass(frozen=True)
class Entry(Generic[F]):
    """One registered factory, the knobs it understands and what else it declared
    (a dataset's loss and metrics, a trainer's probe parts, ...)."""

    name: str
    factory: F
    knobs: type[BaseModel] | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[F]):
    """Holds factories by name; refuses duplicates and names the valid entries on a miss."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[F]] = {}

    def register(self, name: str, *, knobs: type[BaseModel] | None = None,
                 **info: Any) -> Callable[[F], F]:
        """Decorate a factory to register it as `name`. `knobs`, a pydantic model, lists
        the tunable values it takes beyond the built-in ones (its fields' names must not
        be built-in knobs); `info` keeps what else the entry declares."""
        if knobs is not None:
            _check_knobs(self.kind, name, knobs)

        def decorator(factory: F) -> F:
            self.add(Entry(name, factory, knobs, dict(info)))
            return factory

        return decorator

    def add(self, entry: Entry[F]) -> None:
        if entry.name in self._entries:
            raise ConfigError(f"{self.kind} '{entry.name}' is already registered")
        self._entries[entry.name] = entry

    def get(self, name: str) -> F:
        return self.entry(name).factory

    def entry(self, name: str) -> Entry[F]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} '{name}'; registered: {', '.join(self.names()) or 'none'}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _check_knobs(kind: str, name: str, knobs: Any) -> None:
    from stagetune.workers.config import KNOWN_PARAMS  # config imports the registries' users, not us

    if not (isinstance(knobs, type) and issubclass(knobs, BaseModel)):
        raise ConfigError(f"{kind} '{name}': knobs must be a pydantic BaseModel class "
                          f"(got {knobs!r})")
    clash = sorted(set(knobs.model_fields) & set(KNOWN_PARAMS))
    if clash:
        raise ConfigError(f"{kind} '{name}' declares {', '.join(map(repr, clash))}, which "
                          "are built-in knobs; the built-in value reaches the factory "
                          "already (model: in its ModelConfig), so name yours differently")
