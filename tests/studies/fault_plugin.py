"""A plugin for the fault tests, loaded by every trial worker (STAGETUNE_PLUGINS):

- imported in a trial's worker while the file `$FAULT_PLUGIN_DIE_ONCE` does not exist, it
  creates it and kills that worker: a worker lost early, before its trial began to train;
- imported in a trial's worker with `FAULT_PLUGIN_OUT_OF_MEMORY` set, it raises the error
  Ray's memory monitor gives a task it killed (an import that fails is tried again by every
  later trial in that worker);
- imported in a trial's worker while the file `$FAULT_PLUGIN_INTERRUPT_ONCE` does not
  exist, it creates it and interrupts the trial as Ray's cancel does (`interrupt_main`):
  a cancel meant for another trial that landed in this one.
"""

from __future__ import annotations

import _thread
import os
import time
from pathlib import Path

import ray
from ray.exceptions import OutOfMemoryError

RAY_WORDS = ("Task was killed due to the node running low on memory. Memory on the node "
             "(IP: 127.0.0.1) where the task was running was 23.10GB / 24.00GB (0.962), which "
             "exceeds the memory usage threshold of 0.95.")


def _in_a_trial() -> bool:
    return ray.is_initialized() and "run_trial" in (ray.get_runtime_context().get_task_name() or "")


_marker = os.environ.get("FAULT_PLUGIN_DIE_ONCE")
if _marker and _in_a_trial() and not Path(_marker).exists():
    Path(_marker).touch()
    os._exit(1)

if os.environ.get("FAULT_PLUGIN_OUT_OF_MEMORY") and _in_a_trial():
    raise OutOfMemoryError(RAY_WORDS)

_stray = os.environ.get("FAULT_PLUGIN_INTERRUPT_ONCE")
if _stray and _in_a_trial() and not Path(_stray).exists():
    Path(_stray).touch()
    _thread.interrupt_main()  # how Ray's worker delivers a cancel (KeyboardInterrupt)
    time.sleep(5)  # it lands here
