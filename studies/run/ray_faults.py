"""Ray's failures as sentences a person can act on: a process killed for lack of memory
(Ray's memory monitor), a runner that died."""

from __future__ import annotations

from ray.exceptions import OutOfMemoryError

# Ray's own words, in the errors of a task or an actor its memory monitor killed
_MEMORY_WORDS = ("low on memory", "out of memory", "out_of_memory")


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) says Ray killed the process for lack of memory."""
    seen: BaseException | None = exc
    for _ in range(10):  # a task's error wrapped by the pool's, and so on
        if seen is None:
            return False
        if isinstance(seen, OutOfMemoryError) or any(w in str(seen).lower() for w in _MEMORY_WORDS):
            return True
        seen = getattr(seen, "cause", None) or seen.__cause__
    return False


def memory_sentence(who: str) -> str:
    """Why `who` ("its worker", "the study's runner") stopped, when Ray killed it for memory."""
    return (f"{who} was killed because its node ran out of memory (Ray's memory monitor); "
            "give each trial less to hold (a smaller batch_size or model), run fewer at once "
            "(resources.max_concurrent), or use a node with more memory")


def lost_sentence(who: str, exc: BaseException) -> str:
    """Why `who` stopped when Ray lost it: the memory sentence, else Ray's first line."""
    if out_of_memory(exc):
        return memory_sentence(who)
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{who} stopped ({exc.__class__.__name__}){f': {first}' if first else ''}"
