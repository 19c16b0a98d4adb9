"""The supervisor's policy as a table: (phase, what a tick saw) -> (next phase, action,
failed starts), each row checked against the real `transition`. The live behaviour is in
test_supervisor.py and test_queue.py."""

from __future__ import annotations

import itertools

import pytest

from stagetune.service.supervisor import (
    START_ATTEMPTS,
    Action,
    Heard,
    Phase,
    Seen,
    Step,
    Want,
    transition,
)

IDLE, STARTING, CANCELLING, STOPPING = Phase
RUN, WAIT, CANCEL, END = Want
last = START_ATTEMPTS - 1  # a study whose next failed start is its last

TABLE: list[tuple[Phase, Seen, Step]] = [
    # idle: one call toward what the store wants
    (IDLE, Seen(RUN), Step(STARTING, Action.START, 0)),
    (IDLE, Seen(RUN, runner=True), Step(STARTING, Action.START, 0)),  # busy: answers at once
    (IDLE, Seen(RUN, failures=1), Step(STARTING, Action.START, 1)),  # the count is kept
    (IDLE, Seen(WAIT), Step(IDLE, Action.NONE, 0)),  # queued: no process
    (IDLE, Seen(CANCEL, runner=True), Step(CANCELLING, Action.CANCEL, 0)),
    (IDLE, Seen(CANCEL), Step(IDLE, Action.RECORD_CANCELLED, 0)),  # nothing runs it
    (IDLE, Seen(END, runner=True), Step(STOPPING, Action.AWAIT_END, 0)),
    (IDLE, Seen(END), Step(IDLE, Action.NONE, 0)),
    (IDLE, Seen(WAIT, runner=True), Step(IDLE, Action.NONE, 0)),
    # a call in flight: never a second one, whatever the store now wants
    (STARTING, Seen(CANCEL, runner=True), Step(STARTING, Action.NONE, 0)),
    (STARTING, Seen(END, runner=True), Step(STARTING, Action.NONE, 0)),
    (CANCELLING, Seen(RUN, runner=True), Step(CANCELLING, Action.NONE, 0)),
    (STOPPING, Seen(RUN, runner=True), Step(STOPPING, Action.NONE, 0)),
    (STOPPING, Seen(CANCEL, runner=True, failures=2), Step(STOPPING, Action.NONE, 2)),
    # a start answered
    (STARTING, Seen(RUN, Heard.DONE, True, failures=2), Step(IDLE, Action.NONE, 0)),
    (STARTING, Seen(CANCEL, Heard.DONE, True), Step(IDLE, Action.NONE, 0)),
    (STARTING, Seen(RUN, Heard.DIED), Step(IDLE, Action.RETRY, 1)),
    (STARTING, Seen(RUN, Heard.FAILED, True), Step(IDLE, Action.RETRY, 1)),
    (STARTING, Seen(RUN, Heard.DIED, failures=last), Step(IDLE, Action.FAIL, 0)),
    (STARTING, Seen(RUN, Heard.FAILED, True, last), Step(IDLE, Action.FAIL, 0)),
    (STARTING, Seen(RUN, Heard.NOT_ITS_FAULT, True, 1), Step(IDLE, Action.NONE, 1)),
    (STARTING, Seen(END, Heard.NOT_ITS_FAULT, True), Step(IDLE, Action.NONE, 0)),
    # a cancel answered
    (CANCELLING, Seen(CANCEL, Heard.DONE, True), Step(IDLE, Action.NONE, 0)),
    (CANCELLING, Seen(END, Heard.DONE, True), Step(IDLE, Action.NONE, 0)),
    (CANCELLING, Seen(CANCEL, Heard.NOT_RUNNING, True), Step(IDLE, Action.RECORD_CANCELLED, 0)),
    (CANCELLING, Seen(CANCEL, Heard.DIED), Step(IDLE, Action.RECORD_CANCELLED, 0)),
    (CANCELLING, Seen(CANCEL, Heard.FAILED, True), Step(IDLE, Action.RECORD_CANCELLED, 0)),
    # a runner's thread ended: stopped only while its study is over
    (STOPPING, Seen(END, Heard.DONE, True), Step(IDLE, Action.STOP_RUNNER, 0)),
    (STOPPING, Seen(END, Heard.FAILED, True), Step(IDLE, Action.STOP_RUNNER, 0)),
    (STOPPING, Seen(RUN, Heard.DONE, True), Step(IDLE, Action.NONE, 0)),
    (STOPPING, Seen(WAIT, Heard.DONE, True), Step(IDLE, Action.NONE, 0)),
    (STOPPING, Seen(CANCEL, Heard.DONE, True), Step(IDLE, Action.NONE, 0)),
    (STOPPING, Seen(END, Heard.DIED), Step(IDLE, Action.NONE, 0)),
]

# answers no call of the phase gives: a bug in the supervisor, raised rather than guessed
IMPOSSIBLE = [(IDLE, h) for h in Heard if h is not Heard.NOTHING] + [
    (STARTING, Heard.NOT_RUNNING), (CANCELLING, Heard.NOT_ITS_FAULT),
    (STOPPING, Heard.NOT_RUNNING), (STOPPING, Heard.NOT_ITS_FAULT)]


@pytest.mark.parametrize(("phase", "seen", "step"), TABLE,
                         ids=[f"{p}-{s.want}-{s.heard}-runner{int(s.runner)}-f{s.failures}"
                              for p, s, _ in TABLE])
def test_each_row_of_the_table(phase: Phase, seen: Seen, step: Step) -> None:
    assert transition(phase, seen) == step


@pytest.mark.parametrize(("phase", "heard"), IMPOSSIBLE, ids=[f"{p}-{h}" for p, h in IMPOSSIBLE])
def test_an_answer_no_call_of_the_phase_gives_is_refused(phase: Phase, heard: Heard) -> None:
    with pytest.raises(ValueError, match=f"phase '{phase}' cannot have heard '{heard}'"):
        transition(phase, Seen(RUN, heard, runner=True))


def test_the_table_covers_every_phase_and_answer() -> None:
    """Every (phase, answer) pair is either a row of the table or refused: a new phase or
    answer needs its rows."""
    rows = {(phase, seen.heard) for phase, seen, _ in TABLE}
    assert rows | set(IMPOSSIBLE) == set(itertools.product(Phase, Heard))
    assert {seen.want for phase, seen, _ in TABLE if phase is IDLE} == set(Want)


def test_a_study_fails_after_exactly_start_attempts_failed_starts() -> None:
    """Walk the table as the supervisor does: start, hear it die, start again, ..."""
    phase, failures, actions = IDLE, 0, []
    for _ in range(START_ATTEMPTS):
        phase, action, failures = transition(phase, Seen(RUN, failures=failures))
        assert (phase, action) == (STARTING, Action.START)
        phase, action, failures = transition(phase, Seen(RUN, Heard.DIED, failures=failures))
        actions.append(action)
    assert actions == [Action.RETRY] * (START_ATTEMPTS - 1) + [Action.FAIL]
    assert (phase, failures) == (IDLE, 0)
