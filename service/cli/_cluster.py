"""`stagetune head` and `stagetune worker`: the two kinds of Ray node of a deployment
(docker compose's `api` and `worker` commands), each started with Ray's own `ray start`."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Annotated, Any

import typer

from stagetune.service.cli._common import err_console, fail, one_line_errors, require
from stagetune.service.cli._service import DbOption, HostOption, PortOption, run_service, service_settings

log = logging.getLogger(__name__)

HEAD_START_SECONDS = 120.0  # `ray start --head` on a busy 2-core machine takes ~10 s
STOP_SECONDS = 30.0

NumCpus = Annotated[int | None, typer.Option(min=0, help="CPUs this node offers (default: all)")]
NumGpus = Annotated[int | None, typer.Option(min=0, help="GPUs this node offers (default: all)")]
ResourcesOption = Annotated[str | None, typer.Option(
    help='custom Ray resources this node offers, as JSON: \'{"a100": 8}\'; a spec\'s '
         "resources.custom sends trials to such nodes")]
PASS_THROUGH = {"allow_extra_args": True}  # options after `--` go to `ray start`


def head(
    ctx: typer.Context,
    host: HostOption = None,
    port: PortOption = None,
    db: DbOption = None,
    ray_port: Annotated[int, typer.Option(min=1, max=65535,
                                          help="the Ray head's port: workers join HOST:PORT")] = 6379,
    num_cpus: NumCpus = None,
    num_gpus: NumGpus = None,
    resources: ResourcesOption = None,
) -> None:
    """Start a Ray head on this machine and serve the API joined to it.

    SIGTERM stops both. Options after `--` go to `ray start`."""
    require("head", "server", "worker")
    from stagetune.studies.run.cluster import connect

    settings = service_settings(host, port, db)
    node_args = _node_args(num_cpus, num_gpus, resources) + ctx.args
    # the plugins load in the API's worker-code child (run_service), not here: the API's
    # process imports no torch; a broken plugin is still one line, before the API serves
    # SIGTERM unwinds through `finally` (uvicorn re-raises it once it has shut down)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    node = _start_head_node(ray_port, node_args)
    stopping, lost = threading.Event(), threading.Event()
    try:
        _wait_for_head(node, ray_port)
        address = f"127.0.0.1:{ray_port}"
        os.environ["RAY_ADDRESS"] = address  # anything in this process that joins Ray joins this head
        # Joined before uvicorn starts, so that uvicorn's graceful SIGTERM handler replaces the
        # one ray.init installs, not the other way round
        with one_line_errors(code=1):
            connect(address)
        threading.Thread(target=_watch, args=(node, stopping, lost), daemon=True).start()
        run_service(settings.model_copy(update={"ray_address": address}))
    except SystemExit:
        if not lost.is_set():
            raise
    finally:
        stopping.set()
        _stop(node)
    if lost.is_set():
        raise fail(f"the Ray head stopped (exit code {node.returncode}); its output is above", 1)


def worker(
    ctx: typer.Context,
    address: Annotated[str, typer.Option(envvar="RAY_ADDRESS",
                                         help="the Ray head's HOST:PORT, e.g. api:6379")],
    num_cpus: NumCpus = None,
    num_gpus: NumGpus = None,
    resources: ResourcesOption = None,
    wait: Annotated[float, typer.Option(min=0, help="seconds to wait for the head to answer")] = 60,
) -> None:
    """Join the Ray head at --address as a worker node, until stopped (SIGTERM).

    Options after `--` go to `ray start`."""
    require("worker", "server", "worker")
    node_args = _node_args(num_cpus, num_gpus, resources) + ctx.args
    with one_line_errors():
        from stagetune.workers.plugins import load_plugins

        load_plugins()  # trials import them here: a broken one would fail every trial
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise fail(f"--address takes HOST:PORT, e.g. api:6379 (got {address!r})")
    _reach(host, int(port), wait)
    _settle_ray_auth()
    command = _ray("start", f"--address={address}", "--block", *node_args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)  # the node is this process: signals and exit code are its own


def _start_head_node(port: int, node_args: list[str]) -> subprocess.Popen[bytes]:
    """`ray start --head --block` as a child whose output is ours; it stops on SIGTERM."""
    if _answers("127.0.0.1", port):
        raise fail(f"port {port} is in use on this machine; pick another with --ray-port")
    if not _settle_ray_auth():
        err_console.print("[yellow]warning:[/] Ray token authentication is off: anyone who can "
                          f"reach port {port} can run code here; set RAY_AUTH_TOKEN (the same "
                          "on every node) to turn it on", highlight=False)
    # On SIGTERM Ray drains a node until nothing holds a lease on it, for up to 30 s; the
    # head always holds the trial pool (and the runners of running studies, which resume
    # from the store), so it would always wait out the 30 s, and its agents outlive it.
    env = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", **os.environ}
    with one_line_errors():  # STAGETUNE_RAY_DASHBOARD; it imports ray, not at the CLI's start
        from stagetune.studies.run.cluster import ray_dashboard

        dashboard = str(ray_dashboard()).lower()
    return subprocess.Popen(_ray("start", "--head", f"--port={port}", f"--include-dashboard={dashboard}",
                                 "--disable-usage-stats", "--block", *node_args), env=env)


def _settle_ray_auth() -> bool:
    """Decide Ray's token authentication once, in RAY_AUTH_MODE, for this node's processes;
    True when it is on. `ray start --head` turns it on by itself when it finds a token
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), but worker nodes and
    drivers given an address follow RAY_AUTH_MODE only, and would then be refused."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.lower() == "token"
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # pyproject pins Ray to versions that have it
        raise fail(f"Ray {importlib.metadata.version('ray')} moved its token authentication setup; stagetune "
                   "supports Ray 2.52 to 2.60 (set RAY_AUTH_MODE=token or disabled to "
                   "decide it yourself)") from None
    if maybe_enable_token_auth_if_token_available(warn_if_disabled=False):
        return True
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a token file that appears later changes nothing
    return False


def _ray(*args: str) -> list[str]:
    """Ray's command line, run by this Python so that its nodes use this environment."""
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


def _node_args(num_cpus: int | None, num_gpus: int | None, resources: str | None) -> list[str]:
    args = [f"--num-cpus={num_cpus}"] if num_cpus is not None else []
    args += [f"--num-gpus={num_gpus}"] if num_gpus is not None else []
    if resources is not None:
        args.append(f"--resources={json.dumps(_parse_resources(resources))}")
    return args


def _parse_resources(text: str) -> dict[str, float]:
    usage = f'--resources takes a JSON object of names and amounts, e.g. \'{{"a100": 8}}\' (got {text!r})'
    try:
        parsed: Any = json.loads(text)
    except json.JSONDecodeError:
        raise fail(usage) from None
    if not isinstance(parsed, dict):
        raise fail(usage)
    for name, amount in parsed.items():
        if not name.strip() or name in ("CPU", "GPU"):
            raise fail(f"--resources: {name!r} is not a custom resource name"
                       + ("; use --num-cpus or --num-gpus" if name in ("CPU", "GPU") else ""))
        if isinstance(amount, bool) or not isinstance(amount, int | float) \
                or not math.isfinite(amount) or amount < 0:
            raise fail(f"--resources: {name!r} needs an amount >= 0 (got {amount!r})")
    return parsed


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _reach(host: str, port: int, wait: float) -> None:
    """Return once the head's port accepts connections; fail after `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as exc:
            reason = str(exc.strerror or exc)
        if time.monotonic() >= deadline:
            raise fail(f"cannot reach the Ray head at {host}:{port} ({reason}) after {wait:g} s; "
                       "check --address and that `stagetune head` runs there", 1)
        time.sleep(1)


def _wait_for_head(node: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + HEAD_START_SECONDS
    while not _answers("127.0.0.1", port):
        if node.poll() is not None:
            raise fail(f"`ray start --head` exited with code {node.returncode} before the head "
                       "was up; its output is above", 1)
        if time.monotonic() > deadline:
            raise fail(f"the Ray head did not open port {port} in {HEAD_START_SECONDS:.0f} s", 1)
        time.sleep(0.2)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _watch(node: subprocess.Popen[bytes], stopping: threading.Event, lost: threading.Event) -> None:
    """A head whose Ray node died serves nothing useful: stop, so that a supervisor restarts it."""
    node.wait()
    if not stopping.is_set():
        log.error("the Ray head exited with code %s; stopping the service", node.returncode)
        lost.set()
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down as on any SIGTERM


def _stop(node: subprocess.Popen[bytes]) -> None:
    """SIGTERM: `ray start --block` stops the node's processes, then exits."""
    if node.poll() is None:
        node.terminate()
        try:
            node.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


__all__ = ["PASS_THROUGH", "head", "worker"]
