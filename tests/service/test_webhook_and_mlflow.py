"""A study's end, as a user wiring stagetune into their tools sees it: the webhook's JSON
summary at a local HTTP server, and one MLflow run per trial in a file store, read back
with MLflow's own API. The service and its Ray get STAGETUNE_WEBHOOK_URL and
STAGETUNE_MLFLOW_TRACKING_URI from their environment, as in a deployment."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stagetune.service.client import Client
from stagetune.studies.reporting.webhook import ATTEMPTS, send
from tests.service.server import Server
from tests.service.test_api import wait_for_status
from tests.studies.ray_support import NO_PROBES, digits_spec, wait_until

SECRET_PATH = "/hooks/T0-s3cr3t-path"
TOKEN = "webhook-t0ken-value"


class Receiver:
    """A local HTTP server that records each POST and answers with the next of `answers`
    (then 200)."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.received: list[dict[str, Any]] = []
        self.answers = list(answers or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.received.append({"path": self.path, "headers": dict(self.headers),
                                          "body": json.loads(body)})
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}?key=q-s3cr3t"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def test_a_webhook_is_retried_after_a_5xx_and_its_secrets_stay_out_of_the_log(
        receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.answers = [503, 502]
    assert send(receiver.url, {"study": "s", "status": "completed"}, TOKEN, 5.0, wait_s=0.01)
    assert len(receiver.received) == 3
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in receiver.received)
    assert receiver.received[-1]["body"] == {"study": "s", "status": "completed"}

    caplog.set_level(logging.DEBUG, logger="stagetune.studies.reporting.webhook")
    receiver.answers = [503] * ATTEMPTS  # never delivered: a warning, not an error raised
    assert not send(receiver.url, {"study": "s"}, TOKEN, 5.0, wait_s=0.01)
    assert len(receiver.received) == 3 + ATTEMPTS
    assert "not delivered after 4 attempts: it answered 503" in caplog.text
    receiver.answers = [404]  # a refusal is not retried
    assert not send(receiver.url, {"study": "s"}, TOKEN, 5.0, wait_s=0.01)
    assert len(receiver.received) == 4 + ATTEMPTS and "answered 404" in caplog.text
    closed = receiver.url.replace(str(receiver.server.server_address[1]), "1")  # nobody there
    assert not send(closed, {"study": "s"}, TOKEN, 1.0, wait_s=0.01)
    assert "ConnectError" in caplog.text
    for secret in (TOKEN, "s3cr3t"):
        assert secret not in caplog.text, caplog.text


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Receiver, str, Path]]:
    """The receiver and the MLflow file store, named in the environment before the module's
    Ray starts: its runners (and the hook actor) inherit it, as a head node's do."""
    receiver = Receiver(answers=[503])  # the first attempt fails: the runner retries
    folder = tmp_path_factory.mktemp("mlflow")
    patch = pytest.MonkeyPatch()
    patch.setenv("STAGETUNE_WEBHOOK_URL", receiver.url)
    patch.setenv("STAGETUNE_WEBHOOK_TOKEN", TOKEN)
    patch.setenv("STAGETUNE_MLFLOW_TRACKING_URI", f"file:{folder / 'mlruns'}")
    patch.setenv("STAGETUNE_DATA_DIR", str(folder / "data"))  # the runners keep weights there
    patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for mlflow.search_runs here
    yield receiver, f"file:{folder / 'mlruns'}", folder
    patch.undo()
    receiver.close()


@pytest.fixture(scope="module")
def server(hooked: tuple[Receiver, str, Path], ray_local: str) -> Iterator[Server]:
    folder = hooked[2]
    running = Server(f"sqlite:///{folder / 'store.db'}", folder / "data",
                     ray_address=ray_local).start()
    yield running
    running.stop()


@pytest.mark.slow
def test_a_finished_study_posts_its_summary_and_leaves_one_mlflow_run_per_trial(
        hooked: tuple[Receiver, str, Path], server: Server) -> None:
    import mlflow
    from mlflow import MlflowClient

    receiver, tracking_uri, _ = hooked
    spec = digits_spec("hooked", resources={"max_concurrent": 2},
                       stages={**NO_PROBES, "data_check": {"enabled": False},
                               "init_check": {"enabled": False},
                               "coarse": {"trials": 2, "epochs": 1}, "refine": {"enabled": False},
                               "confirm": {"top": 1, "seeds": 1, "epochs": 1}})
    with Client(server.url) as api:
        api.submit(spec)
        study = wait_for_status(api, "hooked", ("completed", "stopped", "failed"), 150)
        assert study.status == "completed", study.message
        trials = api.trials("hooked", limit=100).items
    wait_until(lambda: len(receiver.received) >= 2, 120, "the webhook is delivered")

    # the webhook: retried once after the 503, with the study's summary and the token
    assert len(receiver.received) == 2
    hook = receiver.received[-1]
    assert hook["path"] == f"{SECRET_PATH}?key=q-s3cr3t"
    assert hook["headers"]["Authorization"] == f"Bearer {TOKEN}"
    body = hook["body"]
    assert body["event"] == "study.ended" and body["study"] == "hooked"
    assert body["status"] == "completed" and body["objective"] == "val_accuracy"
    assert study.best is not None and body["best"]["value"] == study.best.value
    assert set(body["best"]["params"]) == {"lr", "width"}
    verdicts = {s["name"]: s["verdict"] for s in body["stages"]}
    assert verdicts["coarse"] in ("passed", "warned") and verdicts["refine"] == "skipped"

    # MLflow: one run per trial, with its parameters, tags and per-epoch curves
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=["hooked"], output_format="list")
    assert len(runs) == len(trials) == 3
    client = MlflowClient(tracking_uri=tracking_uri)
    by_key = {(r.data.tags["stagetune.stage"], int(r.data.tags["stagetune.trial"])): r
              for r in runs}
    assert set(by_key) == {(t.stage, t.stage_number) for t in trials}
    for trial in trials:
        run = by_key[trial.stage, trial.stage_number]
        assert run.data.tags["stagetune.study"] == "hooked"
        assert run.data.tags["stagetune.state"] == trial.state
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == list(range(1, (trial.epochs or 0) + 1)), history
        assert history[-1].value == pytest.approx(trial.value)
    # the winner's run carries its weights
    winner = [r for r in runs if r.data.tags.get("stagetune.winner") == "true"]
    assert len(winner) == 1 and winner[0].data.tags["stagetune.stage"] == "confirm"
    files = [f.path for f in client.list_artifacts(winner[0].info.run_id, "weights")]
    assert files == ["weights/weights.pt"]


@pytest.mark.slow
def test_a_study_cancelled_as_soon_as_it_is_submitted_sends_its_webhook(
        hooked: tuple[Receiver, str, Path], server: Server) -> None:
    """Cancelled before any runner ran it, or by its runner moments in: either way the
    study ended, and the receiver hears so."""
    receiver = hooked[0]
    spec = digits_spec("cancelled-early", resources={"max_concurrent": 2}, stages={**NO_PROBES, "coarse": {"trials": 4, "epochs": 30},
                                                  "refine": {"enabled": False},
                                                  "confirm": {"enabled": False}})
    with Client(server.url) as api:
        api.submit(spec)
        api.cancel("cancelled-early")
        assert wait_for_status(api, "cancelled-early", ("cancelled",), 120).status == "cancelled"
    ended = wait_until(lambda: [r for r in receiver.received
                                if r["body"].get("study") == "cancelled-early"], 120,
                       "the cancelled study's webhook is delivered")
    assert len(ended) == 1 and ended[0]["body"]["status"] == "cancelled"
