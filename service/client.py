"""A small typed client for the REST API (what the `stagetune` commands that talk to a
service use). It imports no torch: a machine that only submits studies needs none.

    from stagetune.service.client import Client
    with Client("http://127.0.0.1:8000", token="...") as api:
        study = api.submit(Path("examples/digits.yaml"))
        print(api.study(study.id).status)

Replies are the API's response models (service/schemas.py), validated from its JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from stagetune.service.schemas import (
    Front,
    Message,
    Page,
    StudyDetail,
    StudySummary,
    TrialDetail,
    TrialOut,
)
from stagetune.workers import StagetuneError

MAX_PAGE = 500  # the most items the API gives in one page
M = TypeVar("M", bound=BaseModel)


class ApiError(StagetuneError):
    """The server answered with an error; `status` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(self, spec: Path | dict[str, Any]) -> StudyDetail:
        """Submit a spec: a dict, or a YAML/JSON file (sent as it is)."""
        if isinstance(spec, Path):
            kind = "application/json" if spec.suffix == ".json" else "application/yaml"
            return self._model(StudyDetail, "POST", "/api/studies", content=spec.read_bytes(),
                               headers={"Content-Type": kind})
        return self._model(StudyDetail, "POST", "/api/studies", json=spec)

    def validate(self, spec: Path | dict[str, Any]) -> Message:
        """Check a spec as submit would, storing nothing; a 422 `ApiError` lists its problems."""
        if isinstance(spec, Path):
            kind = "application/json" if spec.suffix == ".json" else "application/yaml"
            return self._model(Message, "POST", "/api/validate", content=spec.read_bytes(),
                               headers={"Content-Type": kind})
        return self._model(Message, "POST", "/api/validate", json=spec)

    def studies(self, status: str | None = None, offset: int = 0, limit: int = 50
                ) -> Page[StudySummary]:
        params = {"offset": offset, "limit": limit, **({"status": status} if status else {})}
        return self._model(Page[StudySummary], "GET", "/api/studies", params=params)

    def study(self, study_id: str) -> StudyDetail:
        return self._model(StudyDetail, "GET", f"/api/studies/{study_id}")

    def trials(self, study_id: str, stage: str | None = None, state: str | None = None,
               offset: int = 0, limit: int = 50, sort: str | None = None,
               order: str | None = None, **filters: Any) -> Page[TrialOut]:
        """One page of a study's trials (`items`, `total`, `offset`, `limit`); `stage` and
        `state` filter, `sort` names a column (number, stage, state, value, duration,
        epochs, or `param:<name>`) and `order` is asc or desc."""
        params = {"stage": stage, "state": state, "offset": offset, "limit": limit,
                  "sort": sort, "order": order, **filters}
        return self._model(Page[TrialOut], "GET", f"/api/studies/{study_id}/trials",
                           params={k: v for k, v in params.items() if v is not None})

    def all_trials(self, study_id: str, **filters: Any) -> Iterator[TrialOut]:
        """Every trial that `filters` (as `trials` takes them) select, a page at a time."""
        offset = 0
        while True:
            got = self.trials(study_id, offset=offset, limit=MAX_PAGE, **filters)
            yield from got.items
            offset += len(got.items)
            if not got.items or offset >= got.total:
                return

    def trial(self, study_id: str, number: int) -> TrialDetail:
        return self._model(TrialDetail, "GET", f"/api/studies/{study_id}/trials/{number}")

    def cancel(self, study_id: str) -> StudyDetail:
        """Ask the study to stop: it answers at once with status `cancelling`; the study is
        `cancelled` once the service has stopped its trials."""
        return self._model(StudyDetail, "POST", f"/api/studies/{study_id}/cancel")

    def resume(self, study_id: str) -> StudyDetail:
        return self._model(StudyDetail, "POST", f"/api/studies/{study_id}/resume")

    def extend(self, study_id: str, epochs: int, seconds: float | None = None) -> StudyDetail:
        """More budget for a completed or stopped study: refine goes on, then confirm."""
        body = {"epochs": epochs, **({"seconds": seconds} if seconds else {})}
        return self._model(StudyDetail, "POST", f"/api/studies/{study_id}/extend", json=body)

    def delete(self, study_id: str) -> None:
        self._send("DELETE", f"/api/studies/{study_id}")

    def model(self, study_id: str, config: int | None = None) -> bytes:
        """The winner's weights and model.json, zipped; with `config`, those of that
        configuration on the confirmed front (`front`)."""
        params = {"config": config} if config is not None else {}
        return self._send("GET", f"/api/studies/{study_id}/model", params=params).content

    def front(self, study_id: str) -> Front:
        """The front of a study with several objectives: refine's and confirm's."""
        return self._model(Front, "GET", f"/api/studies/{study_id}/front")

    def plot(self, study_id: str, kind: str, **options: Any) -> dict[str, Any]:
        """One figure as Plotly JSON (`data`, `layout`)."""
        figure: dict[str, Any] = self._send("GET", f"/api/studies/{study_id}/plots/{kind}",
                                            params=options).json()
        return figure

    def report(self, study_id: str) -> str:
        """The study as one self-contained HTML page."""
        return self._send("GET", f"/api/studies/{study_id}/report.html").text

    def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        """The reply as `model`; an ApiError where it is not one (another version's API)."""
        response = self._send(method, path, **kwargs)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise ApiError(response.status_code, f"the service's answer to {method} {path} is "
                           f"not what this client expects (is it another stagetune version?): "
                           f"{exc}") from None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach {self._http.base_url}: {exc}") from None
        if response.is_error:
            raise ApiError(response.status_code, _message(response))
        return response


def _message(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # a 422: one entry per field
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                           for d in detail)
    return f"{response.status_code}: {detail}"
