"""A command trainer's program: prints JSON lines of metrics, the way SCRIPT_MODE says.

ok: echoes what reached it (argv and environment) in its metrics and keeps a checkpoint
file; env: as ok, after writing its whole environment as JSON to $ENV_DUMP; garbage: mixes in lines that are not metrics; fail: exits 3 after a traceback;
silent: prints no metric; slow: an epoch a second, writing its pid to a file; stubborn:
as slow, ignoring SIGTERM; hang: one epoch, then ten minutes
of silence.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.0)
parser.add_argument("--epochs", type=int, required=True)
parser.add_argument("--start", type=int, default=0)
parser.add_argument("--width", type=int, default=0)
args = parser.parse_args()
mode = os.environ["SCRIPT_MODE"]
params = json.loads(os.environ["STAGETUNE_PARAMS"])
folder = Path(os.environ["STAGETUNE_CHECKPOINT_DIR"])
start = int(os.environ["STAGETUNE_START_EPOCH"])

if mode == "env":
    Path(os.environ["ENV_DUMP"]).write_text(json.dumps(dict(os.environ)))
if mode in ("slow", "stubborn", "hang"):
    Path(os.environ["PID_FILE"]).write_text(str(os.getpid()))
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "fail":
    print("starting", flush=True)
    print("Traceback (most recent call last):\nValueError: the data folder is empty",
          file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "silent":
    print("training... done")
    sys.exit(0)

resumed_from = int((folder / "epoch.txt").read_text()) if (folder / "epoch.txt").exists() else 0
for epoch in range(start + 1, args.epochs + 1):
    if mode == "garbage":
        print(f"epoch {epoch}: loss looks fine")
        print("{not json")
    (folder / "epoch.txt").write_text(str(epoch))
    print(json.dumps({"epoch": epoch, "val_accuracy": 0.5 + epoch / 100, "lr": args.lr,
                      "width": args.width, "env_hidden": params.get("hidden", -1),
                      "env_epochs": int(os.environ["STAGETUNE_EPOCHS"]),
                      "env_param_hidden": int(os.environ.get("STAGETUNE_PARAM_HIDDEN", -1)),
                      "resumed_from": resumed_from, "start": args.start}), flush=True)
    if mode in ("slow", "stubborn"):
        time.sleep(1.0)
    if mode == "hang":  # an epoch far longer than a cancel may wait
        time.sleep(600)
