"""Optuna's trial cache, one per stage of one study's life.

Optuna's `_CachedStorage` reads a study's finished trials once and then only newer ones,
keyed by Optuna's integer study id. SQLite hands a deleted study's ids (the study's and its
trials') to the next one, so a cache kept across a delete would show the old study's trials
under the new one's name. Each cache here belongs to one study identity (`_identity`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import optuna
from optuna.storages._cached_storage import _CachedStorage

from stagetune.studies.store._identity import StudyIdentity


class TrialCache:
    """Trials read through one `_CachedStorage` per (study identity, stage), the least
    recently read dropped beyond `maxsize` (a dropped one is read again in full)."""

    def __init__(self, storage: optuna.storages.RDBStorage, maxsize: int = 1024) -> None:
        self._storage, self.maxsize = storage, maxsize
        self._caches: OrderedDict[tuple[StudyIdentity, str], _CachedStorage] = OrderedDict()
        self._lock = threading.Lock()

    def trials(self, identity: StudyIdentity, stage: str) -> list[optuna.trial.FrozenTrial]:
        """The trials of `<name>:<stage>` (none before the stage's Optuna study exists)."""
        cache = self._cache(identity, stage)
        try:
            study_id = cache.get_study_id_from_name(f"{identity.name}:{stage}")
        except KeyError:
            return []
        return cache.get_all_trials(study_id, deepcopy=False)

    def forget(self, name: str) -> None:
        """Drop every cache of the study `name` (it was deleted or resumed)."""
        with self._lock:
            for key in [k for k in self._caches if k[0].name == name]:
                del self._caches[key]

    def _cache(self, identity: StudyIdentity, stage: str) -> _CachedStorage:
        key = (identity, stage)
        with self._lock:
            cache = self._caches.get(key)
            if cache is None:
                cache = self._caches[key] = _CachedStorage(self._storage)
                while len(self._caches) > self.maxsize:
                    self._caches.popitem(last=False)
            self._caches.move_to_end(key)
            return cache
