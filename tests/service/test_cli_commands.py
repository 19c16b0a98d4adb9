"""The read and download commands against one live service and one finished study:
`status` (and `--watch`), `trials`, `best`, `model`, `delete`, in every format, and the
exit codes of bad input (2) and of a service that cannot be reached (1)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from stagetune.service.cli._app import app
from stagetune.service.cli._common import fmt
from stagetune.service.client import Client
from tests.service.server import Server, free_port
from tests.studies.ray_support import wait_until

pytestmark = pytest.mark.slow  # its fixture runs a study to the end through a server

STUDY = "cli-done"
SPEC = {"name": STUDY, "task": {"dataset": "digits", "model": "mlp"},
        "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                  "width": {"type": "int", "low": 8, "high": 24}},
        "stages": {"data_check": {"enabled": False}, "baseline": {"enabled": False},
                   "init_check": {"enabled": False}, "overfit": {"enabled": False},
                   "lr_probe": {"enabled": False}, "coarse": {"trials": 3, "epochs": 1},
                   "refine": {"enabled": False}, "confirm": {"top": 1, "seeds": 1, "epochs": 1}},
        "fixed": {"batch_size": 64}, "resources": {"max_concurrent": 2}}


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The module's server, with STUDY submitted through `stagetune submit` and finished.
    The server starts its own Ray, whose runners keep the winner's weights in the
    server's data folder, where `model` downloads them from."""
    tmp = tmp_path_factory.mktemp("cli")
    server = Server(f"sqlite:///{tmp / 'store.db'}", tmp / "data").start()
    try:
        spec = tmp / "done.yaml"
        spec.write_text(yaml.safe_dump(SPEC))
        submitted = cli(server, "submit", str(spec), "--format", "json")
        assert submitted.exit_code == 0, submitted.output
        assert json.loads(submitted.stdout)["id"] == STUDY
        with Client(server.url) as api:
            wait_until(lambda: api.study(STUDY).status not in ("pending", "running"), 240,
                       f"{STUDY} ends")
        yield server
    finally:
        server.stop()


def cli(server: Server | None, *args: str) -> Result:
    env = {"STAGETUNE_URL": server.url} if server else {}
    return CliRunner().invoke(app, list(args), env=env)


def test_status_watch_json_and_yaml(done: Server) -> None:
    watched = cli(done, "status", STUDY, "--watch", "--format", "json")
    assert watched.exit_code == 0, watched.output  # completed
    study = json.loads(watched.stdout)
    assert study["status"] == "completed" and study["best"]["value"] > 0.3
    assert json.loads(cli(done, "status", STUDY, "--json").stdout) == study  # the old flag
    listed = yaml.safe_load(cli(done, "status", "--format", "yaml").stdout)
    assert [s["id"] for s in listed["items"]] == [STUDY]
    assert listed["items"][0]["best_value"] == study["best"]["value"]  # full precision


def test_tables_round_their_numbers(done: Server) -> None:
    with Client(done.url) as api:
        study = api.study(STUDY)
    assert study.best is not None
    value = study.best.value
    assert len(repr(value)) > 8  # a float32 accuracy: 0.8583333492279053, say
    for args in (["status", STUDY], ["status", STUDY, "--watch"], ["status"], ["best", STUDY]):
        shown = cli(done, *args)
        assert shown.exit_code == 0, shown.output
        assert fmt(value) in shown.stdout and repr(value) not in shown.stdout, args
    assert fmt(value) == f"{value:.3g}" and fmt(3.0) == "3" and fmt(12345.678) == "12300"


def test_best_gives_the_winner_with_its_fixed_parameters(done: Server) -> None:
    with Client(done.url) as api:
        winner = api.study(STUDY).best
    assert winner is not None
    best = json.loads(cli(done, "best", STUDY, "--format", "json").stdout)
    assert best["value"] == winner.value and best["stage"] == "confirm"
    assert best["params"] == {"batch_size": 64, **winner.params}
    table = cli(done, "best", STUDY).stdout
    assert f"best value {fmt(best['value'])} in confirm" in table and "batch_size" in table


def test_trials_filter_and_paginate(done: Server) -> None:
    every = page(done, STUDY)
    assert every["total"] == 4 and [t["number"] for t in every["items"]] == [0, 1, 2, 3]
    coarse = page(done, STUDY, "--stage", "coarse", "--state", "complete")
    assert coarse["total"] == 3 and {t["stage"] for t in coarse["items"]} == {"coarse"}
    second = page(done, STUDY, "--offset", "1", "--limit", "2")
    assert (second["offset"], second["limit"], second["total"]) == (1, 2, 4)
    assert [t["number"] for t in second["items"]] == [1, 2]
    assert page(done, STUDY, "--all", "--limit", "1")["items"] == every["items"]
    table = cli(done, "trials", STUDY, "--limit", "2").stdout
    assert "1-2 of 4; next page: --offset 2" in table and "width" in table
    as_yaml = yaml.safe_load(cli(done, "trials", STUDY, "--format", "yaml", "--stage", "confirm").stdout)
    assert [t["stage"] for t in as_yaml["items"]] == ["confirm"]


def test_model_writes_the_winners_zip(done: Server, tmp_path: Path) -> None:
    out = tmp_path / "winner.zip"
    written = cli(done, "model", STUDY, "-o", str(out))
    assert written.exit_code == 0, written.output
    archive = zipfile.ZipFile(io.BytesIO(out.read_bytes()))
    assert set(archive.namelist()) == {"weights.pt", "model.json"}
    assert json.loads(archive.read("model.json"))["task"]["model"] == "mlp"
    missing_folder = cli(done, "model", STUDY, "-o", str(tmp_path / "no" / "such.zip"))
    assert missing_folder.exit_code == 2 and "existing folder" in missing_folder.stderr


@pytest.mark.parametrize("args, needle", [
    (["status", "no-such-study"], "no study named 'no-such-study'"),
    (["best", "no-such-study"], "no study named"),
    (["model", "no-such-study", "-o", "x.zip"], "no study named"),
    (["trials", STUDY, "--stage", "nowhere"], "stage"),
    (["trials", STUDY, "--order", "sideways"], "--order takes asc or desc"),
    (["trials", STUDY, "--limit", "0"], "--limit"),
    (["status", "--format", "xml"], "'xml' is not one of"),
    (["status", "--json", "--format", "yaml"], "two formats"),
    (["submit", "no-such-spec.yaml"], "does not exist"),
    (["status", "--watch"], "give its id"),
    # an explicit --db wins over $STAGETUNE_URL: a resume from a store, which --watch is not for
    (["resume", STUDY, "--db", "sqlite:///nowhere.db", "--watch"], "--watch goes with --url"),
])
def test_bad_input_exits_2_in_one_line(done: Server, args: list[str], needle: str) -> None:
    result = cli(done, *args)
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_a_spec_the_service_refuses_exits_2(done: Server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "name": "cli-bad", "task": {"dataset": "digts",
                                                                       "model": "mlp"}}))
    refused = cli(done, "submit", str(bad))
    assert refused.exit_code == 2 and "task.dataset: unknown dataset 'digts'" in refused.stderr


def test_an_unreachable_service_exits_1(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["status", "--url", url], ["trials", STUDY, "--url", url],
                 ["best", STUDY, "--url", url], ["status", STUDY, "--watch", "--url", url]):
        result = cli(None, *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith(f"error: cannot reach {url}") and "Traceback" not in result.output


def test_trials_sort(done: Server) -> None:
    by_value = page(done, STUDY, "--sort", "value", "--order", "desc")["items"]
    values = [t["value"] for t in by_value]
    assert values == sorted(values, reverse=True)
    by_lr = [t["params"]["lr"] for t in page(done, STUDY, "--sort", "param:lr")["items"]]
    assert by_lr == sorted(by_lr)
    unknown = cli(done, "trials", STUDY, "--sort", "bogus")
    assert unknown.exit_code == 2 and "param:lr" in unknown.stderr  # it names the columns


def test_delete_asks_first_then_removes_the_study(done: Server) -> None:
    kept = CliRunner().invoke(app, ["delete", STUDY], input="n\n", env={"STAGETUNE_URL": done.url})
    assert kept.exit_code == 1 and cli(done, "status", STUDY).exit_code == 0
    deleted = cli(done, "delete", STUDY, "--yes")
    assert deleted.exit_code == 0 and f"deleted study {STUDY}" in deleted.stdout
    assert cli(done, "status", STUDY).exit_code == 2  # no such study now
    assert cli(done, "delete", STUDY, "--yes").exit_code == 2


def page(server: Server, study: str, *args: str) -> dict[str, Any]:
    listed = cli(server, "trials", study, "--format", "json", *args)
    assert listed.exit_code == 0, listed.output
    return json.loads(listed.stdout)  # type: ignore[no-any-return]


def test_validate_at_the_service_checks_as_submit_and_stores_nothing(done: Server, tmp_path: Path
                                                                      ) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**SPEC, "name": "checked-only"}))
    ok = cli(done, "validate", str(good))
    assert ok.exit_code == 0, ok.output
    assert "ok (spec 'checked-only' can run on this service)" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "name": "checked-bad",
                                   "task": {"dataset": "digits", "model": "resnt18"}}))
    refused = cli(done, "validate", str(bad))
    assert refused.exit_code == 2, refused.output
    assert "resnt18" in refused.output and "mlp" in refused.output  # the registered names
    with Client(done.url) as api:
        names = {s.id for s in api.studies(limit=500).items}
    assert not names & {"checked-only", "checked-bad"}
