"""The endpoints take the store, the settings and the current user as dependencies
(service/api/deps.py), so an app can be handed others through `app.dependency_overrides`:
here a real Store on a SQLite file of the test's, a Settings of its own and a caller, with
no lifespan (no Ray, no supervisor thread) and no server."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from stagetune.service.api.deps import get_app_settings, get_store, get_supervisor
from stagetune.service.app import create_app
from stagetune.service.auth import caller
from stagetune.service.settings import Settings
from stagetune.service.supervisor import Supervisor
from stagetune.studies.search.stages import ORDER
from stagetune.studies.spec import load_spec
from stagetune.studies.store import Store, pending_count
from tests.studies.ray_support import NO_PROBES, digits_spec


def open_study(store: Store, name: str) -> None:
    spec = load_spec(digits_spec(name, stages=NO_PROBES, resources={}))
    store.open_study(name, spec.model_dump(mode="json"), list(ORDER))


def test_the_endpoints_use_the_store_settings_and_caller_they_are_given(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'given.db'}")
    for name in ("first", "second"):
        open_study(store, name)
    app = create_app(Settings(api_tokens="", database_url=f"sqlite:///{tmp_path / 'other.db'}"))
    app.dependency_overrides[get_store] = lambda: store
    app.dependency_overrides[get_supervisor] = lambda: Supervisor(store)  # never started
    app.dependency_overrides[get_app_settings] = lambda: Settings(max_pending_per_token=1)
    app.dependency_overrides[caller] = lambda: "alice"
    client = TestClient(app, base_url="http://localhost")

    listed = client.get("/api/studies")
    assert listed.status_code == 200, listed.text
    assert sorted(s["id"] for s in listed.json()["items"]) == ["first", "second"]
    assert client.get("/api/studies/first").json()["status"] == "pending"
    page = client.get("/")  # the pages take the store the same way
    assert page.status_code == 200 and "second" in page.text

    # writes land in the given store too: a cancel, then resumes counted as alice's
    cancelled = client.post("/api/studies/first/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelling"
    assert store.study("first").status == "cancelling"
    for name in ("first", "second"):
        store.set_status(name, "cancelled", "cancelled on request")
    assert client.post("/api/studies/first/resume").status_code == 200
    assert store.study("first").status == "pending" and pending_count(store.url, "alice") == 1
    refused = client.post("/api/studies/second/resume")  # the given settings allow alice one
    assert refused.status_code == 429, refused.text
    assert "STAGETUNE_MAX_PENDING_PER_TOKEN=1" in refused.json()["detail"]
    assert store.study("second").status == "cancelled"
