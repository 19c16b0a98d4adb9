"""Command trainers: a program run per trial that prints its metrics as JSON lines.

The program is started without a shell, its argv's placeholders filled in (`{lr}`,
`{epochs}`, `{seed}`, `{device}`, `{start_epoch}`, `{horizon}`, `{mode}`,
`{checkpoint_dir}` and any knob) and the values in its environment too:

- STAGETUNE_PARAMS: the trial's values as a JSON object; STAGETUNE_PARAM_<NAME> each one;
- STAGETUNE_EPOCHS (the last epoch), STAGETUNE_START_EPOCH, STAGETUNE_HORIZON,
  STAGETUNE_SEED, STAGETUNE_DEVICE, STAGETUNE_MODE;
- STAGETUNE_CHECKPOINT_DIR: a folder of its own. What it holds when the program prints an
  epoch's line is that epoch's checkpoint; a continued trial finds it there again, with
  STAGETUNE_RESUME=1 and STAGETUNE_START_EPOCH the epoch it holds. The folder is packed
  when the line is read, while the program goes on, so a program writes each epoch's
  checkpoint under a name of its own, whole (a temporary file, then a rename), and keeps
  the last line's until the next line is out (the example plugin's digits_numpy does).

Of the worker's own environment it gets only INHERITED (PATH, the locale, HOME, TMPDIR,
the GPUs and CPU threads Ray gave the trial) and the names its registration lists in
`pass_env`, never the rest: the worker's environment holds the service's secrets (API and
webhook tokens, the database's URL and password, Ray's token).

Each stdout line that is a JSON object with an "epoch" is that epoch's metrics, e.g.
`{"epoch": 1, "val_accuracy": 0.9}`; other lines are ignored and counted in the trial's
message. On prune or cancel the program gets SIGTERM and, after a grace, SIGKILL (its
whole process group). A non-zero exit fails the trial with the end of its stderr.
"""

from __future__ import annotations

import fnmatch
import io
import json
import logging
import os
import queue
import signal
import string
import subprocess
import tarfile
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from stagetune.workers.config import KNOWN_PARAMS
from stagetune.workers.errors import ConfigError
from stagetune.workers.trainers._errors import CommandError

if TYPE_CHECKING:
    from stagetune.workers.trainers._context import TrainerContext

log = logging.getLogger(__name__)

PACK_TRIES = 5  # packs of the checkpoint folder, while the program changes it
PLACEHOLDERS = ("epochs", "start_epoch", "horizon", "seed", "device", "mode", "checkpoint_dir")
POLL_SECONDS = 0.1  # how often the wait for a line looks for a cancel
STOP_GRACE_SECONDS = 3.0  # SIGTERM, then SIGKILL: inside Ray's cancel grace (5 s)
STDERR_LINES = 20  # the tail a failed trial's message shows
STDERR_CHARS = 2000
# what a program needs to run where the trial runs; `*` ends a prefix
INHERITED = ("PATH", "HOME", "TMPDIR", "LANG", "LANGUAGE", "LC_*", "TZ",
             "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")


@dataclass(frozen=True)
class CommandTrainer:
    """The trainer function of a registered command."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path | None
    knobs: type[BaseModel] | None
    pass_env: tuple[str, ...] = ()  # more names (or `PREFIX*`) of the worker's environment

    def check_placeholders(self) -> None:
        """Every `{name}` in argv must be a placeholder or a knob (checked at registration)."""
        allowed = set(PLACEHOLDERS) | set(KNOWN_PARAMS) | set(
            self.knobs.model_fields if self.knobs is not None else ())
        for arg in self.argv:
            try:
                names = [field for _, field, _, _ in string.Formatter().parse(arg) if field]
            except ValueError as exc:
                raise ConfigError(f"command '{self.name}': argument {arg!r}: {exc} (write "
                                  "a literal brace as {{ or }})") from None
            unknown = sorted(set(names) - allowed)
            if unknown:
                raise ConfigError(
                    f"command '{self.name}': argument {arg!r} names {', '.join(unknown)}; "
                    f"placeholders are {', '.join(PLACEHOLDERS)} and the knobs: "
                    f"{', '.join(sorted(allowed - set(PLACEHOLDERS)))}")

    def __call__(self, ctx: TrainerContext) -> None:
        with tempfile.TemporaryDirectory(prefix="stagetune-ckpt-") as folder:
            checkpoints = Path(folder)
            resumed = ctx.load_checkpoint()
            if isinstance(resumed, bytes):
                _unpack_folder(resumed, checkpoints)
            values = _values(ctx)
            fill = {**values, **_builtins(ctx, checkpoints)}
            argv = [arg.format(**fill) for arg in self.argv]
            env = {**_inherited((*INHERITED, *self.pass_env)), **self.env,
                   **_environment(ctx, checkpoints, resumed is not None)}
            _Run(self, ctx, argv, env, checkpoints).run()


class _Run:
    """One run of the program: start, read metrics, stop it on prune, judge its exit."""

    def __init__(self, command: CommandTrainer, ctx: TrainerContext, argv: list[str],
                 env: dict[str, str], checkpoints: Path) -> None:
        self.command, self.ctx, self.argv, self.env = command, ctx, argv, env
        self.checkpoints = checkpoints
        self.stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self.ignored = 0

    def run(self) -> None:
        name = self.command.name
        try:
            process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, bufsize=1, env=self.env,
                cwd=self.command.cwd, start_new_session=True)  # its own group: stopped whole
        except OSError as exc:
            raise CommandError(f"command '{name}' could not start '{Path(self.argv[0]).name}': "
                               f"{exc.strerror or exc}") from None
        lines: queue.Queue[str | None] = queue.Queue()
        readers = [threading.Thread(target=self._drain, args=(process,), daemon=True),
                   threading.Thread(target=_lines, args=(process, lines), daemon=True)]
        for reader in readers:
            reader.start()
        stopped = False
        try:
            stopped = self._read(lines)
            if not stopped:
                process.wait()
        finally:  # pruned, cancelled (KeyboardInterrupt), or a bad report: leave nothing
            if process.poll() is None:
                _stop(process)
            for reader in readers:
                reader.join(timeout=1.0)
        if self.ignored:
            self.ctx.notes.append(f"{self.ignored} stdout line{'s' if self.ignored > 1 else ''}"
                                  " that were not JSON metrics were ignored")
        if stopped:
            return
        code = process.returncode
        if code != 0:
            how = (f"was killed by {signal.Signals(-code).name}" if code < 0
                   else f"exited with status {code}")
            raise CommandError(f"command '{name}' {how}; {self._tail()}")
        if not self.ctx.history and self.ctx.start_epoch < self.ctx.epochs:
            raise CommandError(
                f"command '{name}' exited without printing a metric line: a JSON object with "
                'an "epoch", e.g. {"epoch": 1, "val_loss": 0.5}, on stdout after each epoch'
                f" ({self.ignored} other line{'' if self.ignored == 1 else 's'} ignored); "
                f"{self._tail()}")

    def _read(self, lines: queue.Queue[str | None]) -> bool:
        """Hand each metric line to the context; True once it says stop. The wait polls,
        so that a cancel (Ray's KeyboardInterrupt, raised between bytecodes) lands at once,
        not when the program next prints."""
        while True:
            try:
                line = lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if line is None:  # its stdout closed: it ended
                return False
            metrics = _metrics(line)
            if metrics is None:
                self.ignored += bool(line.strip())
                continue
            epoch = metrics.pop("epoch")
            due = isinstance(epoch, (int, float)) and epoch in self.ctx.checkpoint_at
            packed = _pack_folder(self.checkpoints) if due else None  # as the line came
            stop = self.ctx.report(epoch, metrics)
            if packed is not None:
                # handed over after the report, before obeying it, as the built-in loop: a
                # stopped run can still go on, and no checkpoint runs ahead of the reports
                self.ctx.save_checkpoint(packed, epoch=int(epoch))
            if stop:
                return True

    def _drain(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.stderr.append(line.rstrip("\n"))
            log.debug("%s: %s", self.command.name, line.rstrip())
        process.stderr.close()

    def _tail(self) -> str:
        text = "\n".join(self.stderr).strip()
        if not text:
            return "it wrote nothing to stderr"
        return f"the end of its stderr:\n{text[-STDERR_CHARS:]}"


def _lines(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)
    process.stdout.close()
    lines.put(None)


def _metrics(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "epoch" in value else None


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the program's process group; SIGKILL after the grace."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _values(ctx: TrainerContext) -> dict[str, Any]:
    """The knobs a program sees: every built-in one (defaults filled in), the declared
    ones, and what the trial set."""
    declared = ctx.knobs.model_dump() if ctx.knobs is not None else {}
    return {**ctx.train.model_dump(), **ctx.arch.model_dump(), **declared, **ctx.params}


def _builtins(ctx: TrainerContext, checkpoints: Path) -> dict[str, Any]:
    return {"epochs": ctx.epochs, "start_epoch": ctx.start_epoch, "horizon": ctx.horizon,
            "seed": ctx.seed, "device": str(ctx.device), "mode": ctx.mode,
            "checkpoint_dir": str(checkpoints)}


def _inherited(names: tuple[str, ...]) -> dict[str, str]:
    """The variables of this process's environment that `names` allow (`PREFIX*` too)."""
    return {k: v for k, v in os.environ.items()
            if any(fnmatch.fnmatchcase(k, n) for n in names)}


def _environment(ctx: TrainerContext, checkpoints: Path, resumed: bool) -> dict[str, str]:
    # STAGETUNE_PARAMS holds what the trial set and the declared knobs, not every default
    declared = ctx.knobs.model_dump() if ctx.knobs is not None else {}
    shown = {**declared, **ctx.params}
    env = {f"STAGETUNE_PARAM_{k.upper()}": _text(v) for k, v in shown.items()}
    env |= {"STAGETUNE_PARAMS": json.dumps(shown, default=str),
            "STAGETUNE_EPOCHS": str(ctx.epochs), "STAGETUNE_START_EPOCH": str(ctx.start_epoch),
            "STAGETUNE_HORIZON": str(ctx.horizon), "STAGETUNE_SEED": str(ctx.seed),
            "STAGETUNE_DEVICE": str(ctx.device), "STAGETUNE_MODE": ctx.mode,
            "STAGETUNE_CHECKPOINT_DIR": str(checkpoints),
            "STAGETUNE_RESUME": "1" if resumed else "0",
            "PYTHONUNBUFFERED": "1"}  # a Python program's lines arrive as it prints them
    return env


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _pack_folder(folder: Path, tries: int = PACK_TRIES) -> bytes:
    """The folder as a gzipped tar. The program goes on while it is packed: a file it
    replaces or shortens meanwhile makes tarfile fail (OSError), and the pack starts over."""
    for attempt in range(tries):
        buffer = io.BytesIO()
        try:
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                for path in sorted(folder.rglob("*")):
                    tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
        except OSError:
            if attempt == tries - 1:
                raise
            continue
        return buffer.getvalue()
    raise AssertionError("unreachable")


def _unpack_folder(blob: bytes, folder: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        tar.extractall(folder, filter="data")  # no absolute paths, links out or devices
