"""Planted bugs: broken datasets, models and specs run through full staged studies, and
which stage catches each, with what sentence, after how many epochs.

Each bug is one edit of examples/digits.yaml (a plugin dataset or model from
bench/plugins/planted.py, or a fixed knob), with `budget: {epochs: B}` and its own name;
everything else in the example is kept, its `goal` included. Each study runs through
`studies.run.runner.Runner` with the LocalExecutor, in this process, on a fresh SQLite store.
The healthy study is the example itself, under the same budget.

For every bug the report gives:
- *caught at*: the first stage whose verdict is warned or failed and whose message names
  the bug's cause (the bug's `words`, a regular expression); *first alarm*, when it differs,
  is the first warned or failed stage at all;
- *right stage*: whether that stage is one the bug belongs to (`stages`: the data check for
  bad data, init_check for what a model does before any update, overfit for what only
  training shows, baseline/coarse for labels that carry no information);
- *epochs to flag*: the epochs the study's stages spent up to and including that stage
  (each stage's `spent.epochs` in the study report; probes count epoch equivalents);
- *% of healthy*: that against the healthy study's total epochs (goal: at most 2%);
- *ended*: how the study ended (completed, or stopped by a gate, with the stage), and its
  total epochs.

    python bench/planted_bugs.py                      # every bug, budget 60 (~2 min, 2 CPUs)
    python bench/planted_bugs.py --budgets 60,150 --jobs 2   # the results file (~2-4 min)
    python bench/planted_bugs.py --bugs softmax_twice,lr_zero --no-write

Threads are 1 per process; `--jobs` runs that many studies side by side in separate
processes (the results do not depend on it, only the wall time does).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import logging
import multiprocessing
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "plugins"))

import planted  # noqa: E402,F401  (registers the planted datasets and models)
import yaml  # noqa: E402

from stagetune.studies.run.runner import Runner, StudyReport, report_of  # noqa: E402
from stagetune.studies.spec import load_spec  # noqa: E402
from stagetune.studies.store import Store  # noqa: E402

RESULTS = HERE / "results" / "planted_bugs.md"
EXAMPLE = ROOT / "examples" / "digits.yaml"
ALARMS = ("warned", "failed")
GOAL_SHARE = 0.02  # of the healthy study's epochs


@dataclass(frozen=True)
class Bug:
    """One planted bug: the spec edit that plants it, where it belongs, what names it."""

    name: str
    what: str  # the bug, as a person would describe it
    stages: tuple[str, ...]  # the stages that should catch it; none: a healthy control
    words: str  # a regular expression (case-insensitive) a sentence naming the cause matches
    dataset: str | None = None
    model: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    loss: str | None = None


BUGS: dict[str, Bug] = {bug.name: bug for bug in (
    Bug("shuffled_labels", "labels permuted against the inputs", ("baseline", "coarse"),
        r"chance level", dataset="planted_shuffled_labels"),
    Bug("leaked_val", "every sample in twice, so validation rows are copied into training",
        ("data_check",), r"exact copies of training samples", dataset="planted_leaked_val"),
    Bug("conflicting_labels", "300 inputs repeated with a different label",
        ("data_check",), r"appear with different labels", dataset="planted_conflicting_labels"),
    Bug("nan_pixels", "NaN pixels in 5% of the images", ("data_check",), r"NaN",
        dataset="planted_nan_features"),
    Bug("nan_table", "NaN in three columns of a table, 5% of rows (model: mlp)",
        ("data_check",), r"NaN", dataset="planted_nan_table", model="mlp"),
    Bug("constant_inputs", "every image blank (all inputs identical)", ("data_check",),
        r"(all|every) (input|sample|image)s? (is|are) (the same|identical|constant|blank)"
        r"|\b(\d+) of \1 pixel", dataset="planted_constant_inputs"),
    Bug("labels_from_one", "labels 1..10 instead of 0..9", ("data_check",),
        r"never occur in training", dataset="planted_labels_from_one"),
    Bug("label_from_input", "wrong label column: the label is an input pixel thresholded",
        ("data_check", "baseline"), r"predicts the label|function of (an|one) (input|feature)",
        dataset="planted_label_from_input"),
    Bug("softmax_twice", "a final softmax fed to cross-entropy (probabilities as logits)",
        ("init_check",), r"outputs probabilities", model="planted_softmax_twice"),
    Bug("logits_x50", "logits scaled ×50", ("init_check",), r"outputs are too large",
        model="planted_logits_x50"),
    Bug("frozen", "every parameter frozen", ("init_check",), r"frozen", model="planted_frozen"),
    Bug("detached", "the output detached from the graph", ("init_check",), r"detached",
        model="planted_detached"),
    Bug("input_ignored", "the model reads zeros instead of its input", ("init_check", "overfit"),
        r"input.{0,60}(zero|constant|ignored|not used)", model="planted_input_ignored"),
    Bug("dead_relu", "ReLU units dead at init (first-layer bias -10)", ("init_check",),
        r"dead units", model="planted_dead_relu"),
    Bug("unnormalised", "inputs ×255 into an MLP without normalisation", ("init_check",),
        r"not normalised", model="planted_unnormalised"),
    Bug("deep_sigmoid", "12 sigmoid layers, no normalisation: vanishing gradients",
        ("init_check",), r"vanish", model="planted_deep_sigmoid"),
    Bug("lr_zero", "fixed lr: 0", ("init_check", "overfit"), r"learning rate is 0",
        fixed={"lr": 0.0}),
    Bug("lr_tiny", "fixed lr: 1e-7 (far too small)", ("overfit", "lr_probe"),
        r"learning rate|\blr\b", fixed={"lr": 1e-7}),
    # the training step (workers.probes._step_findings)
    Bug("running_stats_norm", "batch norms that use their running statistics in training",
        ("init_check",), r"did not update (its|their) running statistics",
        model="planted_running_stats_norm"),
    Bug("norm_eval_in_forward", "batch norms put in eval mode in forward although they train",
        ("init_check",), r"ran in evaluation mode during the training step",
        model="planted_norm_eval_in_forward"),
    Bug("stale_tensor", "the previous batch's logits added to this batch's (state across steps)",
        ("init_check",), r"state kept across steps", model="planted_stale_tensor"),
    Bug("frozen_top_block", "the top conv block frozen by mistake, stem and head learning",
        ("init_check",), r"(is|are) frozen \(requires_grad False\)",
        model="planted_frozen_top_block"),
    Bug("eval_dropout", "input dropout left on in evaluation (F.dropout(training=True))",
        ("init_check",), r"Two evaluations of the same batch", model="planted_eval_dropout"),
    # the labels' quality (workers.label_quality)
    Bug("noisy_labels", "20% of the labels replaced by a random class (about 18% wrong)",
        ("data_check",), r"of the training labels look wrong", dataset="planted_noisy_labels"),
    Bug("swapped_class", "30% of the 3s labelled 5 (one class confused with another)",
        ("data_check",), r"Class 3 is labelled 5", dataset="planted_swapped_class"),
    Bug("small_init", "six ReLU layers with every weight from N(0, 0.01): the signal dies",
        ("init_check",), r"initiali[sz]ation, or a layer that scales",
        model="planted_small_init"),
    Bug("batch_mixing", "a reshape that mixes samples across the batch (view, not permute)",
        ("init_check",), r"depend on the rest of its batch", model="planted_batch_mixing"),
    # a loss and an augmentation of the user's own
    Bug("nll_on_logits", "a registered loss: nll_loss on raw outputs (log_softmax missing)",
        ("init_check",), r"log.softmax|log-probabilities", loss="planted_nll_on_logits"),
    Bug("tiny_zoom", "a registered zoom augmentation that keeps 2-8% of the image",
        ("data_check",), r"break the labels", fixed={"augment": "planted_tiny_zoom"}),
    # healthy controls that look suspicious: no stage should warn or fail
    Bug("imbalanced", "healthy control: zero against the other digits, 95/5", (), r"$^",
        dataset="planted_imbalanced"),
    Bug("tiny_dataset", "healthy control: 200 rows of digits", (), r"$^",
        dataset="planted_tiny"),
    Bug("linear_model", "healthy control: a linear softmax model", (), r"$^",
        model="planted_linear"),
    Bug("regularised", "healthy control: dropout 0.5 and weight decay 0.01", (), r"$^",
        fixed={"dropout": 0.5, "weight_decay": 0.01}),
    Bug("augmented", "healthy control: crop and cutout", (), r"$^",
        fixed={"augment": "crop+cutout"}),
)}
HEALTHY = Bug("healthy", "examples/digits.yaml as it is", (), r"$^")


def study_spec(bug: Bug, budget: int) -> dict[str, Any]:
    """examples/digits.yaml with `bug` planted, under `budget` epochs."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["name"] = f"planted-{bug.name.replace('_', '-')}-{budget}"
    raw["budget"] = {"epochs": budget}
    if bug.dataset:
        raw["task"]["dataset"] = bug.dataset
    if bug.model:
        raw["task"]["model"] = bug.model
    if bug.loss:
        raw["task"]["loss"] = bug.loss
    raw["fixed"] = {**raw.get("fixed", {}), **bug.fixed}
    for knob in bug.fixed:  # a fixed knob leaves the space
        raw["space"].pop(knob, None)
    return raw


def run_study(bug: Bug, budget: int, folder: Path) -> StudyReport:
    """The whole staged study, in process; a study that errors is reported from the store."""
    raw = study_spec(bug, budget)
    store = Store(f"sqlite:///{folder / (raw['name'] + '.db')}")
    try:
        return Runner(load_spec(raw), store).run()
    except Exception:  # recorded as failed, with its reason, by the runner
        logging.getLogger(__name__).warning("%s ended with an error", raw["name"])
        return report_of(store.study(raw["name"]), raw["task"].get("objective", ""))


def judge(report: StudyReport, bug: Bug) -> dict[str, Any]:
    """Where the study flagged `bug`: the stage, its sentence, the epochs spent until then."""
    pattern = re.compile(bug.words, re.IGNORECASE)
    alarms = [s for s in report.stages if s["verdict"] in ALARMS]
    named = next((s for s in alarms if pattern.search(s["message"] or "")), None)
    first = alarms[0] if alarms else None
    shown = named or first
    spent, upto = 0.0, None
    for stage in report.stages:
        spent += stage["spent"]["epochs"] or 0.0
        if shown is not None and stage["name"] == shown["name"]:
            upto = spent
            break
    stopped = report.message.split(":", 1)[0] if report.status != "completed" else None
    return {
        "bug": bug.name, "what": bug.what, "expected": list(bug.stages),
        "caught_at": named["name"] if named else None,
        "verdict": named["verdict"] if named else None,
        "first_alarm": f"{first['name']} ({first['verdict']})" if first else None,
        "right_stage": bool(named and named["name"] in bug.stages),
        "sentence": sentence(shown["message"], pattern) if shown else "",
        "epochs_to_flag": upto, "status": report.status, "stopped_at": stopped,
        "epochs_total": report.compute.get("epochs", 0.0),
        "verdicts": {s["name"]: s["verdict"] for s in report.stages},
        "messages": {s["name"]: s["message"] for s in report.stages},
        "baseline": report.baseline,
        "stop_message": " ".join(report.message.split()),
    }


def sentence(message: str, pattern: re.Pattern[str]) -> str:
    """The sentence of `message` that names the cause (else its first), at most 320 chars."""
    message = " ".join(message.split())  # one line: a table cell
    parts = re.split(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.)])\s+(?=[A-Z0-9])", message.strip())
    at = next((i for i, p in enumerate(parts) if pattern.search(p)), 0)
    hit = " ".join(parts[at:at + 2]) if len(parts[at]) < 160 else parts[at]
    return hit if len(hit) <= 320 else hit[:317] + "..."


def run_one(name: str, budget: int, folder: str) -> dict[str, Any]:
    """One study in a worker process (or this one): the judged result and its wall time."""
    import torch

    torch.set_num_threads(1)
    quiet()
    bug = HEALTHY if name == HEALTHY.name else BUGS[name]
    started = time.perf_counter()
    report = run_study(bug, budget, Path(folder))
    return {**judge(report, bug), "budget": budget,
            "seconds": round(time.perf_counter() - started, 1)}


def quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)


def run_all(names: list[str], budgets: list[int], jobs: int) -> list[dict[str, Any]]:
    units = [(n, b) for b in budgets for n in [HEALTHY.name, *names]]
    with tempfile.TemporaryDirectory(prefix="planted-") as folder:
        if jobs <= 1:
            return [run_one(n, b, folder) for n, b in units]
        context = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            return list(pool.map(run_one, *zip(*units, strict=True), [folder] * len(units)))


# --- the report --------------------------------------------------------------------------


def rate(row: dict[str, Any], healthy: float) -> float | None:
    return None if row["epochs_to_flag"] is None or not healthy else \
        row["epochs_to_flag"] / healthy


def is_control(row: dict[str, Any]) -> bool:
    """A healthy control: no stage should catch anything (`Bug.stages` empty)."""
    return not row["expected"]


def meets_goal(row: dict[str, Any], healthy: float) -> bool:
    if is_control(row):
        return row["first_alarm"] is None
    share = rate(row, healthy)
    return bool(row["right_stage"] and share is not None and share <= GOAL_SHARE)


def table(rows: list[dict[str, Any]], healthy: dict[int, float]) -> str:
    head = ("| budget | bug | caught at | right stage | epochs to flag | % of healthy | "
            "ended | sentence |\n|---:|---|---|---|---:|---:|---|---|")
    lines = [head]
    for r in rows:
        if r["bug"] == HEALTHY.name:
            continue
        share = rate(r, healthy[r["budget"]])
        caught = (f"{r['caught_at']} ({r['verdict']})" if r["caught_at"] else
                  f"**missed** (first alarm: {r['first_alarm'] or 'none'})")
        if is_control(r):
            caught = "no alarm" if r["first_alarm"] is None else \
                f"**false alarm**: {r['first_alarm']}"
        right = right_cell(r)
        ended = (f"{r['status']}" + (f" at {r['stopped_at']}" if r["stopped_at"] else "")
                 + f", {r['epochs_total']:.1f} ep")
        epochs = "—" if r["epochs_to_flag"] is None else f"{r['epochs_to_flag']:.2f}"
        pct = "—" if share is None else f"{share:.1%}" + ("" if share <= GOAL_SHARE else " ✗")
        if not r["caught_at"] and r["epochs_to_flag"] is not None:  # up to the first alarm
            epochs, pct = f"({epochs})", f"({pct})"
        text = r["sentence"].replace("|", "\\|")
        lines.append(f"| {r['budget']} | `{r['bug']}`: {r['what']} | {caught} | {right} | "
                     f"{epochs} | {pct} | {ended} | {text} |")
    return "\n".join(lines)


def right_cell(r: dict[str, Any]) -> str:
    if is_control(r):
        return "healthy control"
    if r["caught_at"]:
        return "yes" if r["right_stage"] else f"**no** (expected {' or '.join(r['expected'])})"
    alarm = (r["first_alarm"] or "").split(" ")[0]
    if alarm in r["expected"]:
        return "the stage, not the cause"
    return f"**no** (expected {' or '.join(r['expected'])})"


def healthy_text(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        if r["bug"] != HEALTHY.name:
            continue
        failed = [s for s, v in r["verdicts"].items() if v == "failed"]
        warned = [s for s, v in r["verdicts"].items() if v == "warned"]
        verdicts = ", ".join(f"{s} {v}" for s, v in r["verdicts"].items())
        out.append(f"- budget {r['budget']}: **{r['status']}**, {r['epochs_total']:.1f} epochs, "
                   f"{r['seconds']:.0f} s; failed gates: {', '.join(failed) or 'none'}; "
                   f"warned: {', '.join(warned) or 'none'}. Verdicts: {verdicts}.")
    return "\n".join(out)


def summary(rows: list[dict[str, Any]], healthy: dict[int, float]) -> str:
    out = []
    for budget in sorted(healthy):
        bugs = [r for r in rows if r["budget"] == budget and r["bug"] != HEALTHY.name
                and not is_control(r)]
        controls = [r for r in rows if r["budget"] == budget and r["bug"] != HEALTHY.name
                    and is_control(r)]
        named = [r for r in bugs if r["caught_at"]]
        right = [r for r in bugs if r["right_stage"]]
        goal = [r for r in bugs if meets_goal(r, healthy[budget])]
        out.append(f"- budget {budget} (healthy study: {healthy[budget]:.1f} epochs): "
                   f"{len(bugs)} bugs; {len(named)} flagged by a sentence that names the cause, "
                   f"{len(right)} of them at the right stage, {len(goal)} at the right stage "
                   f"within {GOAL_SHARE:.0%} of the healthy study's epochs; "
                   f"{sum(not meets_goal(r, 0.0) for r in controls)} false alarms on "
                   f"{len(controls)} healthy controls.")
    return "\n".join(out)


def findings(rows: list[dict[str, Any]], healthy: dict[int, float]) -> str:
    """What fell short of the goal and why; what was flagged but not stopped; the rest."""
    short, went_on, other = [], [], []
    bugs = [r for r in rows if r["bug"] != HEALTHY.name]
    for name in dict.fromkeys(r["bug"] for r in bugs):
        mine = [r for r in bugs if r["bug"] == name]
        head = f"- `{name}` ({mine[0]['what']})"
        missing = [r for r in mine if not meets_goal(r, healthy[r["budget"]])]
        if missing:
            short.append(f"{head}: {shortfall(missing, healthy)} {NOTES.get(name, '')}".rstrip())
        gone = [r for r in mine if r not in missing and r["stopped_at"] != r["caught_at"]]
        if gone:
            went_on.append(f"{head}: " + "; ".join(
                f"budget {r['budget']}: {went_on_text(r, healthy[r['budget']])}" for r in gone)
                + f". {NOTES.get(name, '')}".rstrip())
        if name in CAVEATS:
            other.append(f"{head}: {CAVEATS[name]}")
    for r in [r for r in rows if r["bug"] == HEALTHY.name]:
        for stage, verdict in r["verdicts"].items():
            if verdict in ("warned", "skipped"):
                note = HEALTHY_NOTES.get((stage, verdict), "")
                if stage == "confirm" and r["verdicts"].get("refine") not in ALARMS + ("passed",):
                    note = ""  # the note is about a confirm skipped after refine ran
                other.append(f"- the healthy study at budget {r['budget']}: {stage} {verdict}: "
                             f"\"{r['messages'][stage]}\" {note}".rstrip())
    return "\n\n".join([
        "**Short of the goal** (missed, named at the wrong stage, misnamed or late):\n\n"
        + ("\n".join(short) or "- none"),
        "**Flagged in time, but the study went on** (a warning does not stop a study):\n\n"
        + ("\n".join(went_on) or "- none"),
        "**Other observations**:\n\n" + ("\n".join(other) or "- none")])


def shortfall(rows: list[dict[str, Any]], healthy: dict[int, float]) -> str:
    """One bug's shortfall over the budgets where it falls short (`rows`)."""
    def cost(r: dict[str, Any]) -> str:
        share = rate(r, healthy[r["budget"]])
        at = "" if share is None else f", the alarm at {r['epochs_to_flag']:.2f} ({share:.1%})"
        base = "" if r["baseline"] is None else f", baseline {r['baseline']:.3f}"
        return f"budget {r['budget']}: {r['status']} after {r['epochs_total']:.1f} epochs{at}{base}"

    costs = "; ".join(cost(r) for r in rows)
    first = rows[0]
    if not first["caught_at"]:
        loud = next((r for r in rows if r["first_alarm"]), None)
        alarm = ("no stage warned or failed" if loud is None else
                 f"the first alarm, {loud['first_alarm']}, says \"{loud['sentence']}\"")
        if len({r["first_alarm"] for r in rows}) > 1:
            alarm += " (first alarm by budget: " + ", ".join(
                f"{r['budget']}: {r['first_alarm'] or 'none'}" for r in rows) + ")"
        return f"**missed**: no warned or failed stage names the cause; {alarm} ({costs})."
    if not first["right_stage"]:
        return f"named at {first['caught_at']}, not at {' or '.join(first['expected'])} ({costs})."
    return f"named at {first['caught_at']}, but late ({costs})."


def went_on_text(r: dict[str, Any], healthy: float) -> str:
    flagged = f"{r['caught_at']} {r['verdict']} after {r['epochs_to_flag']:.2f} epochs"
    if r["status"] == "completed":
        return (f"{flagged}, and the study completed, spending {r['epochs_total']:.1f} epochs "
                f"({r['epochs_total'] / healthy:.0%} of the healthy study's)")
    if r["status"] == "failed":
        return (f"{flagged}; then {r['stopped_at']} raised, and the study ended *failed* with "
                f"\"{r['stop_message'][:120]}...\" rather than a gate's diagnosis")
    return (f"{flagged}; the study stopped only at {r['stopped_at']}, after "
            f"{r['epochs_total']:.1f} epochs ({r['epochs_total'] / healthy:.0%} of the healthy "
            "study's)")


# Why a bug falls short, or is flagged but not stopped, from reading the stages' code
# (shown only when it is).
NOTES: dict[str, str] = {
    "shuffled_labels": (
        "The baseline's chance-level warning costs nothing, but by design only coarse stops "
        "the study, once its trials stay at chance too (a linear model at chance is no "
        "alarm when a network does better), so the stop costs the probes and coarse's share."),
    "labels_from_one": (
        "A class missing from both splits only warns: the network trains well with an 11th "
        "output that is never right, so the warning is the whole catch."),
    "batch_mixing": (
        "init_check names it (a sample's outputs depend on the rest of its batch, 'a view or "
        "reshape mixes samples') but only warns: the same symptom comes from a batch norm "
        "without running statistics, which some users choose, so it is not a gate. The "
        "study then trains on mixed samples."),
    "imbalanced": (
        "Coarse warns that lr's good values crowd the high edge of the declared range (lr "
        "up to 1.0, best 0.4): the rule for a range the user can widen, applied as written. "
        "On 95/5 data half the trials sit at the majority rate, so 'good' is decided by "
        "few trials; the warning is not about the imbalance, which the data check reports "
        "as information with a macro-F1 edit."),
    "tiny_zoom": (
        "The data check names it and warns; a warning does not stop a study, so the "
        "augmentation still trains the network on images that do not show their class."),
}
# What the healthy study's warned or skipped stages mean.
HEALTHY_NOTES: dict[tuple[str, str], str] = {
    ("coarse", "warned"): (
        "Read the sentence: an edge of the user's own declared range warns (the user can "
        "move it); an edge of the LR probe's range inside it does not (refine moves it)."),
    ("confirm", "skipped"): (
        "By the plan: confirm's share (15% of the budget) pays for no full run of "
        "refine.epochs, and the sentence says so."),
}
# Facts about bugs that met the goal, worth knowing.
CAVEATS: dict[str, str] = {
    "nan_pixels": (
        "the loader standardises images per channel, so one NaN pixel turns the channel's "
        "mean, and every value, into NaN. All images then hash alike: the stop message "
        "leads with the leak rule ('360 of 360 validation samples are exact copies'), and "
        "NaN is named only in the fourth finding."),
    "lr_zero": (
        "the suggested lr is adamw's (0.001) because the probes use the fixed knobs only, "
        "and the optimizer is searched (sgd_nesterov or adamw)."),
}


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, text=True,
                               capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" with uncommitted changes" if dirty else "")


def machine(meta: dict[str, Any]) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = []
    for module in ("torch", "optuna", "numpy", "sklearn"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except (ImportError, AttributeError):
            pass
    return "\n".join([
        f"- run: {meta['started']} to {meta['finished']}, wall time {meta['seconds'] / 60:.1f} min",
        f"- CPU: {cpu}; nproc {os.cpu_count()}; torch threads per process: 1; studies side "
        f"by side (--jobs): {meta['jobs']}; no GPU; the machine is shared",
        f"- Python {platform.python_version()}, {', '.join(versions)}; {platform.platform()}",
        f"- stagetune: commit {meta['commit']}",
        f"- load average (1/5/15 min): {meta['load_start']} at the start, "
        f"{meta['load_end']} at the end",
        f"- command: `{meta['command']}`",
    ])


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def details(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        verdicts = ", ".join(f"{s} {v or '—'}" for s, v in r["verdicts"].items())
        out.append(f"- budget {r['budget']}, `{r['bug']}`: {r['status']} in {r['seconds']:.0f} s, "
                   f"{r['epochs_total']:.2f} epochs; {verdicts}"
                   + (f". Stopped: {r['stop_message']}" if r["stop_message"] else ""))
    return "\n".join(out)


def write(rows: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> str:
    healthy = {r["budget"]: r["epochs_total"] for r in rows if r["bug"] == HEALTHY.name}
    text = "\n\n".join([
        "# Planted bugs: which stage catches each, and at what cost",
        table(rows, healthy),
        "One full staged study per bug: examples/digits.yaml (convnet on digits) with one "
        "bug planted (a plugin dataset or model from bench/plugins/planted.py, or a fixed "
        "knob) and `budget: {epochs: B}`; the LocalExecutor, one trial at a time. *caught "
        "at*: the first warned or failed stage whose message names the cause (the bug's "
        "pattern in bench/planted_bugs.py); *epochs to flag*: the study's spent epochs up to "
        "and including that stage (probes in epoch equivalents); *% of healthy*: that over "
        f"the healthy study's total epochs on the same budget (goal ≤ {GOAL_SHARE:.0%}, ✗ "
        "above); *ended*: the study's status, the gate that stopped it, and its total epochs. "
        "For a missed bug the epochs are up to its first alarm, if any.",
        "## Summary\n\n" + summary(rows, healthy),
        "## The healthy study\n\n" + healthy_text(rows),
        "## Findings\n\n" + findings(rows, healthy),
        "## Machine\n\n" + machine(meta),
        "## Per study\n\n" + details(rows),
    ]) + "\n"
    path.write_text(text)
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", default="60", help="comma-separated epoch budgets (default 60)")
    p.add_argument("--bugs", default=",".join(BUGS), help="comma-separated bug names")
    p.add_argument("--jobs", type=int, default=1, help="studies side by side (processes)")
    p.add_argument("--no-write", action="store_true", help="print the report, do not save it")
    p.add_argument("--output", type=Path, default=RESULTS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    names = [n for n in args.bugs.split(",") if n]
    unknown = [n for n in names if n not in BUGS]
    if unknown:
        sys.exit(f"unknown bugs {unknown}; known: {', '.join(BUGS)}")
    meta = {"started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "load_start": load_average(), "jobs": args.jobs, "commit": git_commit(),
            "command": f"python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}"}
    started = time.perf_counter()
    rows = run_all(names, [int(b) for b in args.budgets.split(",")], args.jobs)
    meta.update(finished=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                seconds=time.perf_counter() - started, load_end=load_average())
    target = Path(tempfile.mkstemp(suffix=".md")[1]) if args.no_write else args.output
    print(write(rows, meta, target))


if __name__ == "__main__":
    main()
