"""What a study hands over: the winner's weights, or those of a configuration picked from
the front of several objectives, and the front itself."""

from __future__ import annotations

import io
import json
import pathlib
import tempfile
import zipfile
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response

from stagetune.service.api.deps import StoreDep
from stagetune.service.schemas import Front, Message
from stagetune.studies.reporting import views
from stagetune.studies.search.pareto import declared_objectives, front_entries, trial_front
from stagetune.studies.store import Store, StudyRecord
from stagetune.studies.store.weights import fetch_weights

router = APIRouter(tags=["studies"])
ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": Message}, 409: {"model": Message}}


@router.get("/studies/{study_id}/model", response_class=Response, responses={
    200: {"content": {"application/zip": {}}, "description": "weights.pt and model.json"},
    **ERRORS})
def download_model(store: StoreDep, study_id: str, config: Annotated[int | None, Query(
        ge=0, le=10_000, description="a configuration on the confirmed front (GET .../front): "
        "its best run's weights instead of the winner's")] = None) -> Response:
    """The winner's weights (a torch state_dict) and how to rebuild the model, as a zip."""
    record = store.study(study_id)
    given = views.handed(record)
    if config is None:
        params, weights = given.get("best", {}).get("params", {}), given.get("weights") or {}
    else:
        entry = _on_front(record, config)
        params, weights = entry["params"], entry["weights"]
    if not weights.get("artifact_id"):
        raise HTTPException(404, f"study '{study_id}' has no winner's weights yet: they are kept "
                       "when the confirm stage finishes")
    rebuild = {"task": record.spec["task"], "params": {**record.spec.get("fixed", {}), **params},
               "trial": weights.get("trial"), "value": weights.get("value"),
               "how": "stagetune.workers.models.build_model(task.model, stagetune.workers.data.load_dataset("
                      "task.dataset, task.dataset_options), stagetune.workers.config.parse_params("
                      "{**task.model_options, **params})[1]).load_state_dict("
                      "torch.load('weights.pt'))"}
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(buffer, "w") as archive:
        archive.write(fetch_weights(weights["artifact_id"], pathlib.Path(tmp) / "weights.pt"),
                      "weights.pt")
        archive.writestr("model.json", json.dumps(rebuild, indent=2))
    name = f"{study_id}-model.zip" if config is None else f"{study_id}-config-{config}-model.zip"
    return Response(buffer.getvalue(), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/studies/{study_id}/front", response_model=Front, responses=ERRORS)
def get_front(store: StoreDep, study_id: str) -> Front:
    """The configurations no other beats on every objective (`task.objectives`): refine's,
    as each trial scored, and confirm's, by their means over seeds, each with the address
    of its weights: pick the trade-off you want and download it."""
    record = store.study(study_id)
    names = record.spec.get("task", {}).get("objectives") or []
    if not names:
        raise HTTPException(409, f"study '{study_id}' has one objective: a front needs two or "
                                 "three, named in the spec's task.objectives")
    stages = {s.name: s for s in record.stages}
    refine = stages["refine"].figures if "refine" in stages else {}
    objectives, points = refine.get("objectives"), refine.get("front")
    if objectives is None:  # refine has not finished: its front so far, where it can tell
        objectives, points = _front_so_far(store, record)
    confirmed = stages["confirm"].figures.get("front", []) if "confirm" in stages else []
    return Front.model_validate({
        "objectives": [{"name": n, "direction": d} for n, d in objectives],
        "refine": points or [],
        "confirmed": [{**{k: e[k] for k in ("config", "params", "seeds", "means", "std")},
                       "model_url": f"/api/studies/{study_id}/model?config={e['config']}"}
                      for e in confirmed],
        "note": "" if points is not None else "The front comes when refine finishes: the "
                "direction of an objective is known to its trial workers only."})


def _front_so_far(store: Store, record: StudyRecord
                  ) -> tuple[list[tuple[str, str | None]], list[dict[str, Any]] | None]:
    """Refine's front among the trials finished so far; None where the direction of an
    objective is known only to a worker (a trainer's own metric)."""
    objectives = declared_objectives(record.spec["task"])
    if objectives is None:
        return [(n, None) for n in record.spec["task"]["objectives"]], None
    on = trial_front(store.trials(record.name, "refine"), objectives)
    return list(objectives), front_entries(on)


def _on_front(record: StudyRecord, config: int) -> dict[str, Any]:
    confirm = next((s for s in record.stages if s.name == "confirm"), None)
    entries = {e["config"]: e for e in (confirm.figures.get("front", []) if confirm else [])}
    if config not in entries:
        on = ", ".join(map(str, entries)) or "none yet: confirm has not finished"
        raise HTTPException(404, f"configuration {config} is not on study '{record.name}''s "
                                 f"confirmed front; on it: {on} (GET .../front lists them)")
    return entries[config]
