"""What people read about a study: plain-data views built from the store alone, shared
by the REST API, the CLI and (next) the dashboards."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, overload

import optuna
from optuna.trial import TrialState

from stagetune.studies.errors import StudyNotFoundError
from stagetune.studies.reporting.edits import useful_fixes
from stagetune.studies.search.stages import ORDER
from stagetune.studies.search.stages._coarse import rung_table
from stagetune.studies.store import StageRecord, Store, StudyRecord

TRIAL_STAGES = ("coarse", "refine", "confirm")  # the stages whose work is Optuna trials
TrialStage = Literal["coarse", "refine", "confirm"]
STATES = {"running": TrialState.RUNNING, "complete": TrialState.COMPLETE,
          "pruned": TrialState.PRUNED, "failed": TrialState.FAIL, "waiting": TrialState.WAITING}
STATE_NAMES = {state: name for name, state in STATES.items()}


def handed(record: StudyRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage in record.stages:
        out.update(stage.hand_on)
    return out


def current_stage(record: StudyRecord) -> str | None:
    """The stage running now, else the next one to run, else None (all done)."""
    for stage in record.stages:
        if stage.status != "done":
            return stage.name
    return None


def summary(store: Store, record: StudyRecord) -> dict[str, Any]:
    """One line of the studies list."""
    given = handed(record)
    best = given.get("best")
    counts = {name: 0 for name in STATES}
    for stage in TRIAL_STAGES:
        for t in store.trials(record.name, stage):
            counts[STATE_NAMES[t.state]] += 1
    return {"id": record.name, "status": record.status, "message": record.message,
            "current_stage": current_stage(record) if record.status == "running" else None,
            "best_value": _finite(best["value"]) if best else None,
            "baseline": _finite(given.get("baseline")), "trials": counts,
            "created_at": utc(record.created_at), "updated_at": utc(record.updated_at)}


def detail(store: Store, record: StudyRecord) -> dict[str, Any]:
    """A study with its stages, verdicts, best parameters and value, baseline, compute."""
    given = handed(record)
    best = given.get("best")
    return {**summary(store, record), "spec": record.spec,
            "stages": [_stage(s, store, record) for s in record.stages],
            "best": {"params": best["params"], "value": _finite(best["value"]),
                     "stage": best.get("stage")} if best else None,
            "diagnosis": given.get("diagnosis"),
            "weights": given.get("weights"),
            "compute": {"epochs": round(sum(s.epochs for s in record.stages), 3),
                        "seconds": round(sum(s.seconds for s in record.stages), 3),
                        "trial_seconds": round(sum(s.trial_seconds for s in record.stages), 3)},
            "budget": budget_view(record)}


def budget_view(record: StudyRecord) -> dict[str, Any] | None:
    """The budget against what the plan gave out and what was spent, per unit."""
    budget = record.spec.get("budget")
    if not budget:
        return None
    out: dict[str, Any] = {}
    for unit, spent_of in (("epochs", lambda s: s.epochs), ("seconds", lambda s: s.trial_seconds)):
        if budget.get(unit) is None:
            continue
        planned = [(s.planned or {}).get(unit) for s in record.stages]
        out[unit] = {"budget": budget[unit],
                     "planned": round(sum(p or 0.0 for p in planned), 3),
                     "spent": round(sum(spent_of(s) for s in record.stages), 3)}
    return out


def _stage(stage: StageRecord, store: Store, record: StudyRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"name": stage.name, "status": stage.status, "verdict": stage.verdict,
                           "message": stage.message, "epochs": stage.epochs, "seconds": stage.seconds,
                           "started_at": utc(stage.started_at), "finished_at": utc(stage.finished_at)}
    out["planned"] = stage.planned
    out["trial_seconds"] = stage.trial_seconds
    # spec edits, as data: only those that would change something
    out["fixes"] = useful_fixes(record, list(stage.figures.get("fixes") or []))
    if stage.name in TRIAL_STAGES:
        counts = {name: 0 for name in STATES}
        trials = store.trials(record.name, stage.name)
        for t in trials:
            counts[STATE_NAMES[t.state]] += 1
        out["trials"] = counts
        levels = (stage.planned or {}).get("sizes", {}).get("rungs")
        if stage.name == "coarse" and levels:
            out["rungs"] = [{k: v for k, v in r.items() if k not in ("trials", "best")}
                            for r in rung_table(list(trials), levels, "maximize")]
    return out





def all_trials(store: Store, study: str) -> Iterator[tuple[int, str, optuna.trial.FrozenTrial]]:
    """Every trial of a study in order, with its study-wide number: stages run one after
    another, so numbering coarse, then refine, then confirm never changes a number."""
    number = 0
    for stage in ORDER:
        if stage in TRIAL_STAGES:
            for trial in store.trials(study, stage):
                yield number, stage, trial
                number += 1


def trial_row(number: int, stage: str, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {"number": number, "stage": stage, "stage_number": trial.number,
            "state": STATE_NAMES[trial.state], "status": attrs.get("status"),
            "reason": attrs.get("message"), "value": _finite(trial.value),
            "params": trial.params, "epochs": attrs.get("epochs"),
            "restarts": attrs.get("restarts", 0), "interrupted": attrs.get("interrupted", 0),
            "worker": attrs.get("worker"),
            "started_at": local_to_utc(trial.datetime_start),
            "finished_at": local_to_utc(trial.datetime_complete),
            # successive halving: the rungs it passed, and where a continued trial came from
            "rungs": sorted(int(k.rsplit("_", 1)[1]) for k in trial.system_attrs
                            if k.startswith("completed_rung_")),
            "continues": attrs.get("continues"), "started_after": attrs.get("started_after"),
            "drawn_from": attrs.get("drawn_from"), "parameters": attrs.get("parameters"),
            "seconds": attrs.get("seconds"), "objectives": attrs.get("objectives")}


def trial_detail(store: Store, study: str, number: int) -> dict[str, Any]:
    for n, stage, trial in all_trials(store, study):
        if n == number:
            curve = store.curves_of(study, stage, trial.number)
            return {**trial_row(n, stage, trial), "curves": curve}
    raise StudyNotFoundError(f"study '{study}' has no trial {number}")


@overload
def utc(moment: datetime) -> datetime: ...
@overload
def utc(moment: None) -> None: ...
def utc(moment: datetime | None) -> datetime | None:
    """Our times are stored in UTC; SQLite gives them back without their zone."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def local_to_utc(moment: datetime | None) -> datetime | None:
    """Optuna stamps trials with the server's local time, without a zone."""
    return moment.astimezone(UTC) if moment is not None else None


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such values are reported as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value




# -- the trial table: server-side sort and filter -------------------------------------------

Numbered = tuple[int, str, optuna.trial.FrozenTrial]  # (study-wide number, stage, trial)
SORT_COLUMNS = ("number", "stage", "state", "value", "duration", "epochs")
FIELDS = (*SORT_COLUMNS, "status")  # what a `q` comparison may name, beside parameters
_OPERATORS = ("<=", ">=", "!=", "==", "<", ">", "=")
_TERM = re.compile(r"^(.+?)(<=|>=|!=|==|<|>|=)(.*)$")


class TrialQueryError(ValueError):
    """A sort column or filter term that names nothing; `field` is the query parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def select_trials(trials: Sequence[Numbered], *, stage: str | None = None,
                  state: str | None = None, q: str = "", sort: str = "number",
                  order: str = "asc") -> list[Numbered]:
    """The trials that pass the filters, sorted by `sort` (a column of SORT_COLUMNS or
    `param:<name>`), ties in number order; trials without the value come last either way.

    `q` holds terms that must all match: `name<op>value` compares a parameter or a field
    (value, epochs, duration, number, stage, state, status) with <, <=, >, >=, = or !=,
    as numbers when both sides are; any other term is a case-insensitive substring of a
    parameter's `name=value`, the status or the reason."""
    names = parameter_names(trials)
    column = _sort_column(sort, names)
    tests = [_term(term, names) for term in q.split()]
    picked = [row for row in trials if (stage is None or row[1] == stage)
              and (state is None or STATE_NAMES[row[2].state] == state)
              and all(test(row) for test in tests)]
    keyed = [(_sort_key(TRIAL_STAGES.index(row[1]) if column == "stage"  # in run order
                        else _field(row, column)), row) for row in picked]
    present = sorted((k for k in keyed if k[0] is not None), key=lambda k: k[0],  # type: ignore[arg-type, return-value]
                     reverse=order == "desc")  # a stable sort, even reversed
    return [row for _, row in present] + [row for key, row in keyed if key is None]


def parameter_names(trials: Sequence[Numbered]) -> list[str]:
    return sorted({p for _, _, t in trials for p in t.params})


def _sort_column(sort: str, names: Sequence[str]) -> str:
    if sort in SORT_COLUMNS:
        return sort
    if sort.startswith("param:") and sort[len("param:"):] in names:
        return sort[len("param:"):]
    allowed = ", ".join([*SORT_COLUMNS, *(f"param:{n}" for n in names)])
    raise TrialQueryError("sort", f"cannot sort by '{sort[:80]}'; sort by one of: {allowed}")


def _field(row: Numbered, name: str) -> Any:
    number, stage, trial = row
    attrs = trial.user_attrs
    if name == "number":
        return number
    if name == "stage":
        return stage
    if name == "state":
        return STATE_NAMES[trial.state]
    if name == "status":
        return attrs.get("status")
    if name == "value":
        return _finite(trial.value)
    if name == "epochs":
        return attrs.get("epochs")
    if name == "duration":
        seconds = attrs.get("seconds")
        if seconds is None and trial.datetime_start and trial.datetime_complete:
            seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        return seconds
    return trial.params.get(name)


def _sort_key(value: Any) -> tuple[int, float, str] | None:
    """Numbers before text (a categorical parameter may mix them); None: no value."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _term(term: str, names: Sequence[str]) -> Any:
    """A test of one row for one term of `q`."""
    for name in sorted([*names, *FIELDS], key=len, reverse=True):  # lr[optimizer=sgd] first
        for op in _OPERATORS:
            if term.startswith(name + op):
                return _comparison(name, op, term[len(name) + len(op):])
    parsed = _TERM.match(term)
    if parsed:
        known = ", ".join(FIELDS) + (f" or a parameter ({', '.join(names)})" if names else "")
        raise TrialQueryError("q", f"'{parsed.group(1)[:80]}' in the filter names nothing: "
                              f"compare {known}")
    needle = term.lower()
    return lambda row: (any(needle in f"{k}={v}".lower() for k, v in row[2].params.items())
                        or needle in str(row[2].user_attrs.get("status") or "").lower()
                        or needle in str(row[2].user_attrs.get("message") or "").lower())


def _comparison(name: str, op: str, text: str) -> Any:
    wanted = _number(text)
    if wanted is None and op not in ("=", "==", "!="):
        raise TrialQueryError("q", f"'{name}{op}{text[:80]}': {op} compares numbers, and "
                              f"'{text[:80]}' is not one")
    compare = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
               "=": operator.eq, "==": operator.eq, "!=": operator.ne}[op]

    def test(row: Numbered) -> bool:
        value = _field(row, name)
        if value is None:
            return op == "!="
        if wanted is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            return bool(compare(float(value), wanted))
        if op in ("=", "==", "!="):
            return bool(compare(str(value).lower(), text.lower()))
        return False

    return test


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
