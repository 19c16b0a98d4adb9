"""The worker-code child (workers/sidecar.py): one process, started on first use, gone once
idle, and started afresh after it died."""

from __future__ import annotations

import os
import time
from concurrent.futures.process import BrokenProcessPool

import psutil
import pytest

from stagetune.workers.sidecar import Sidecar, WorkerCodeTimeout


def test_one_child_runs_every_call_and_leaves_once_idle() -> None:
    sidecar = Sidecar(idle_seconds=1.0)
    try:
        child = sidecar.call(os.getpid)
        assert child != os.getpid()
        assert sidecar.call(os.getpid) == child  # warm: the same process
        deadline = time.monotonic() + 30
        while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the idle child did not exit"
            time.sleep(0.2)
        assert sidecar.call(os.getpid) not in (child, os.getpid())  # a new one, on demand
    finally:
        sidecar.close()


def test_a_child_that_dies_is_replaced() -> None:
    sidecar = Sidecar()
    try:
        first = sidecar.call(os.getpid)
        with pytest.raises(BrokenProcessPool):
            sidecar.call(os._exit, 3)  # dies, and dies again on the one retry
        assert sidecar.call(os.getpid) not in (first, os.getpid())
    finally:
        sidecar.close()


def running(pid: int) -> bool:
    """Whether `pid` is alive and not a zombie (it may end between two questions)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_call_that_hangs_ends_the_child_and_says_so() -> None:
    sidecar = Sidecar(call_seconds=2.0)
    try:
        first = sidecar.call(os.getpid)
        with pytest.raises(WorkerCodeTimeout, match="did not answer within 2 s"):
            sidecar.call(time.sleep, 60)
        deadline = time.monotonic() + 10
        while running(first):
            assert time.monotonic() < deadline, "the hung child was left running"
            time.sleep(0.2)
        assert sidecar.call(os.getpid) not in (first, os.getpid())  # the next call: a new child
    finally:
        sidecar.close()
