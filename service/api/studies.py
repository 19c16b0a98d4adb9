"""Studies and their trials: submit, list, read, cancel, resume, delete, download."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from stagetune.service.api.deps import (
    CallerDep,
    ClusterDep,
    FiguresDep,
    ReadCacheDep,
    SettingsDep,
    StoreDep,
    SupervisorDep,
)
from stagetune.service.cache import ReadCache
from stagetune.service.cluster_view import ClusterView
from stagetune.service.schemas import (
    Extension,
    Message,
    Page,
    StudyDetail,
    StudyStatus,
    StudySummary,
    TrialDetail,
    TrialOut,
    TrialState,
    ValidationErrors,
)
from stagetune.service.settings import Settings
from stagetune.studies.errors import StudyNotFoundError
from stagetune.studies.planning.capacity import unmet
from stagetune.studies.reporting import views
from stagetune.studies.search.stages import ORDER
from stagetune.studies.search.warm_start import warm_source
from stagetune.studies.spec import SpecError, StudySpec
from stagetune.studies.spec.checks import load_spec_apart as load_spec  # torch in a child process
from stagetune.studies.spec.text import YAML_TYPES, parse_spec_text
from stagetune.studies.store import (
    Store,
    StudyIdentity,
    extend_study,
    pending_count,
    studies_version,
    study_identity,
)
from stagetune.workers import StagetuneError

router = APIRouter(tags=["studies"])

Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=500)]
# The spec's JSON Schema (studies.spec.schema), which service.errors puts in the components;
# a YAML body has the same structure
SPEC_SCHEMA = {"$ref": "#/components/schemas/StudySpec"}
SPEC_BODY = {"requestBody": {"required": True, "description": "a study spec, as JSON or YAML",
                             "content": {"application/json": {"schema": SPEC_SCHEMA},
                                         "application/yaml": {"schema": SPEC_SCHEMA}}}}
ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": Message}, 409: {"model": Message}}
SPEC_ERRORS = {"model": ValidationErrors,
               "description": "The spec breaks a rule: one entry per problem, with its field"}
QUEUE_FULL = {"model": Message, "description": "The caller has as many pending studies as "
              "STAGETUNE_MAX_PENDING_PER_TOKEN allows"}


def _json(shape: Any, data: Any) -> bytes:
    """Validate against the documented shape, then serialise (done here once, not by
    FastAPI on every request: cached bytes are served as they are). Dumping plain dicts
    without validating first would skip the check, and pydantic warns of it."""
    adapter = _adapter(shape)
    return adapter.dump_json(adapter.validate_python(data))


@functools.cache
def _adapter(shape: Any) -> TypeAdapter[Any]:
    return TypeAdapter(shape)


def _reply(body: bytes) -> Response:
    return Response(body, media_type="application/json")


def after_write(store: StoreDep, cache: ReadCacheDep, figures: FiguresDep,
                supervisor: SupervisorDep) -> Callable[..., None]:
    """What a write calls once done, `changed(study)`: drop cached reads (and `study`'s
    trials and figures), and let the supervisor act now."""
    def changed(study: str | None = None) -> None:
        if study is not None:
            store.trial_cache.forget(study)
            figures.drop(study)
        cache.clear()
        supervisor.kick()

    return changed


Changed = Annotated[Callable[..., None], Depends(after_write)]


def _identity(store: Store, study_id: str) -> StudyIdentity:
    """The study's identity, the read cache's key for it: a study deleted and created
    again under its name (by this service or another process) is another one."""
    identity = study_identity(store.url, study_id)
    if identity is None:
        raise StudyNotFoundError(f"no study named '{study_id}' in the store")
    return identity


@router.post("/studies", status_code=201, response_model=StudyDetail, openapi_extra=SPEC_BODY,
             responses={409: {"model": Message}, 413: {"model": Message},
                        415: {"model": Message}, 422: SPEC_ERRORS, 429: QUEUE_FULL})
async def submit(request: Request, store: StoreDep, settings: SettingsDep,
                 cluster: ClusterDep, owner: CallerDep, changed: Changed) -> Any:
    """Create a study from a spec (JSON, or YAML with its content type); its runner starts."""
    raw, kind = await _spec_body(request, settings)
    # parsing and the store are synchronous (a megabyte of YAML takes a while): a thread
    return await run_in_threadpool(_create, raw, kind, store, settings, cluster, owner, changed)


async def _spec_body(request: Request, settings: Settings) -> tuple[bytes, str]:
    """The request's body, bounded in size, and its content type."""
    raw = await request.body()
    if len(raw) > settings.max_body_bytes:
        raise HTTPException(413, f"the body is over {settings.max_body_bytes} bytes")
    return raw, request.headers.get("content-type", "application/json")


def _create(raw: bytes, content_type: str, store: Store, settings: Settings,
            cluster: ClusterView, owner: str, changed: Callable[..., None]) -> Any:
    _queue_room(store, settings, owner)  # before the parse: a flood is refused cheaply
    spec = _runnable_spec(raw, content_type, settings, cluster)
    if spec.name in store.study_names():
        raise HTTPException(409, f"a study named '{spec.name}' already exists; choose another name, "
                       f"or POST /api/studies/{spec.name}/resume")
    try:  # its source must be there and fit: a study accepted can run
        warm_source(spec, store)
    except StagetuneError as exc:
        raise SpecError(str(exc), [("warm_start_from", str(exc))]) from None
    record = store.open_study(spec.name, spec.to_store(), list(ORDER),
                              queued_by=owner)
    changed()
    return views.detail(store, record)


@router.post("/validate", response_model=Message, openapi_extra=SPEC_BODY,
             responses={413: {"model": Message}, 415: {"model": Message}, 422: SPEC_ERRORS})
async def validate(request: Request, settings: SettingsDep, cluster: ClusterDep,
                   _caller: CallerDep) -> Any:
    """Check a spec as submit would (its schema, the workers' checks, the cluster's
    resources) and store nothing: `stagetune validate --url` answers in a fraction of a
    second here, where the workers' code is already loaded."""
    raw, kind = await _spec_body(request, settings)
    return await run_in_threadpool(_check, raw, kind, settings, cluster)


def _check(raw: bytes, content_type: str, settings: Settings, cluster: ClusterView) -> Message:
    spec = _runnable_spec(raw, content_type, settings, cluster)
    return Message(detail=f"spec '{spec.name}' can run on this service")


def _runnable_spec(raw: bytes, content_type: str, settings: Settings, cluster: ClusterView
                   ) -> StudySpec:
    """The body as a spec that passes every check submit makes before it stores it."""
    spec = load_spec(_parse_spec(raw, content_type, settings.max_body_bytes))
    _fits_cluster(cluster, settings, spec)
    return spec


def _queue_room(store: Store, settings: Settings, owner: str) -> None:
    """Nothing when the caller (`owner`, service.auth.caller) has room for one more pending
    study; else a 429 that says why and what to do. (Two submits at the same instant may
    both pass: the bound is there against floods, not for exact accounting.)"""
    most = settings.max_pending_per_token
    waiting = pending_count(store.url, owner)
    if waiting >= most:
        who = "this token has" if owner else "the service has"
        raise HTTPException(429, f"{who} {waiting} studies pending, the most allowed "
                       f"(STAGETUNE_MAX_PENDING_PER_TOKEN={most}); submit or resume more once "
                       "some have started, or cancel some")


def _fits_cluster(cluster: ClusterView, settings: Settings, spec: StudySpec) -> None:
    """A 422 for a trial that no node of the cluster can hold, which would wait forever;
    unless the cluster may grow (STAGETUNE_CLUSTER_MAY_GROW), where its runner says it waits."""
    nodes = cluster.nodes()
    if settings.cluster_may_grow or nodes is None:
        return
    short = unmet(spec.resources, nodes)
    if short is not None:
        short = unmet(spec.resources, cluster.fresh() or nodes)
    if short is not None:
        field, why = short
        raise SpecError(why, [(field, f"{why}: no trial could ever start; ask for what one node "
                                      "has, or set STAGETUNE_CLUSTER_MAY_GROW=true where nodes "
                                      "join later (an autoscaling cluster)")])


def _parse_spec(raw: bytes, content_type: str, max_bytes: int) -> dict[str, Any]:
    """The body as a mapping: nesting, size after YAML's aliases, and numbers bounded, so
    hostile text gets a 422 that says what is allowed, never a 500 or a huge object."""
    kind = content_type.split(";")[0].strip().lower()
    if kind in YAML_TYPES:
        syntax = "yaml"
    elif kind in ("application/json", "") or kind.endswith("+json"):
        syntax = "json"
    else:
        raise HTTPException(415, f"send the spec as application/json or application/yaml "
                       f"(got {kind[:80]})")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise SpecError(f"the body is not UTF-8 text: {exc}") from None
    data = parse_spec_text(text, syntax, max_bytes)
    if not isinstance(data, dict):
        raise SpecError("the spec must be a mapping with name, task, space, ...")
    return data


@router.get("/studies", response_model=Page[StudySummary])
def list_studies(store: StoreDep, cache: ReadCacheDep, status: StudyStatus | None = None,
                 offset: Offset = 0, limit: Limit = 50) -> Any:
    """Studies, newest first; `status` filters."""
    def compute() -> bytes:
        records, total = store.list_studies(status, offset, limit)
        return _json(Page[StudySummary], {"items": [views.summary(store, r) for r in records],
                                          "total": total, "offset": offset, "limit": limit})

    # keyed by the studies' version too: a study created or deleted by another process
    version = studies_version(store.url)
    return _reply(cache.get(("studies", version, status, offset, limit), compute))


@router.get("/studies/{study_id}", response_model=StudyDetail, responses=ERRORS)
def get_study(store: StoreDep, cache: ReadCacheDep, study_id: str) -> Any:
    """A study with its stages, verdicts, best parameters and value, baseline and compute."""
    return _reply(cache.get(("study", _identity(store, study_id)), lambda: _json(
        StudyDetail, views.detail(store, store.study(study_id)))))


@router.post("/studies/{study_id}/cancel", status_code=202, response_model=StudyDetail,
             responses=ERRORS)
def cancel(store: StoreDep, changed: Changed, study_id: str) -> Any:
    """Ask a pending or running study to stop; the answer comes at once, with status
    `cancelling`. The supervisor then stops its runner, which records its running trials
    and the study as `cancelled` (a pending study is cancelled before it runs)."""
    if not store.set_status(study_id, "cancelling", "cancel requested",
                            only_from=("pending", "running", "cancelling")):
        status = store.study(study_id).status
        raise HTTPException(409, f"study '{study_id}' is {status}, not running: nothing to cancel")
    answer = views.detail(store, store.study(study_id))  # before the supervisor acts on it
    changed()
    return answer


@router.post("/studies/{study_id}/resume", response_model=StudyDetail,
             responses={**ERRORS, 429: QUEUE_FULL})
def resume(store: StoreDep, settings: SettingsDep, owner: CallerDep, changed: Changed,
           study_id: str) -> Any:
    """Go on with a cancelled or failed study from where the store says it is."""
    status = store.study(study_id).status
    if status not in ("cancelled", "failed"):
        raise HTTPException(409, f"study '{study_id}' is {status}; only a cancelled or failed "
                       "study can be resumed")
    _queue_room(store, settings, owner)
    store.set_status(study_id, "pending", "resume requested", queued_by=owner)
    changed(study_id)
    return views.detail(store, store.study(study_id))


@router.post("/studies/{study_id}/extend", response_model=StudyDetail,
             responses={**ERRORS, 400: {"model": Message, "description": "The body is not JSON"},
                        429: QUEUE_FULL})
def extend(store: StoreDep, settings: SettingsDep, owner: CallerDep, changed: Changed,
           study_id: str, more: Extension) -> Any:
    """Give a completed or stopped study more budget: refine goes on from every trial it
    observed, then confirm runs again (a new round). Nothing recorded changes; a study
    that cannot go on is a 409 that says why."""
    store.study(study_id)  # a 404 first
    _queue_room(store, settings, owner)
    extend_study(store.url, study_id, more.epochs, more.seconds, queued_by=owner)
    changed(study_id)
    return views.detail(store, store.study(study_id))


@router.delete("/studies/{study_id}", status_code=204, response_class=Response,
               responses=ERRORS)
def delete(store: StoreDep, changed: Changed, study_id: str) -> Response:
    """Delete a study that is not running nor being cancelled, with its trials and curves."""
    status = store.study(study_id).status
    if status in ("pending", "running"):
        raise HTTPException(409, f"study '{study_id}' is {status}; cancel it before deleting it")
    if status == "cancelling":  # its runner still records it, and its webhook is still to come
        raise HTTPException(409, f"study '{study_id}' is cancelling; delete it once it is "
                       "cancelled (within seconds)")
    store.delete_study(study_id)
    changed(study_id)
    return Response(status_code=204)


# The schema lists the columns; which parameters a study has, only its trials say (a 422
# names them): so the type stays a string, checked by views.select_trials
Sort = Annotated[str, Query(max_length=200, description=(
    "a column: number, stage, state, value, duration (seconds), epochs, or a parameter as "
    "`param:<name>`; trials without the value come last"), json_schema_extra={
        "anyOf": [{"enum": list(views.SORT_COLUMNS)}, {"pattern": "^param:.+$"}]})]
Order = Annotated[Literal["asc", "desc"], Query()]
Filter = Annotated[str, Query(max_length=500, description=(
    "terms that must all match: `name<op>value` compares a parameter or value, epochs, "
    "duration, number, stage, state, status (<, <=, >, >=, =, !=); another term is a "
    "case-insensitive substring of a parameter's `name=value`, the status or the reason"))]


@router.get("/studies/{study_id}/trials", response_model=Page[TrialOut], responses=ERRORS)
def list_trials(store: StoreDep, cache: ReadCacheDep, study_id: str,
                stage: views.TrialStage | None = None, state: TrialState | None = None,
                offset: Offset = 0, limit: Limit = 50, sort: Sort = "number",
                order: Order = "asc", q: Filter = "") -> Any:
    """A study's trials, numbered across stages, a page at a time: `stage`, `state` and
    `q` filter, `sort` and `order` sort (by number, ascending, unless told)."""
    picked = select_trials(store, cache, study_id, stage=stage, state=state, q=q, sort=sort,
                           order=order)
    return _reply(_json(Page[TrialOut], {
        "items": [views.trial_row(*t) for t in picked[offset:offset + limit]],
        "total": len(picked), "offset": offset, "limit": limit}))


def select_trials(store: Store, cache: ReadCache, study_id: str, **query: Any
                  ) -> list[views.Numbered]:
    """The trials that pass the filters, in order, kept in the read cache: 10,000 trials sort
    in well under 200 ms on 2 cores, and the next page's request reuses the order. A bad
    `sort` or `q` is a 422 shaped like FastAPI's own."""
    identity = _identity(store, study_id)

    def compute() -> list[views.Numbered]:
        try:
            return views.select_trials(_trials(store, cache, identity), **query)
        except views.TrialQueryError as exc:
            raise RequestValidationError([{"loc": ("query", exc.field), "msg": str(exc),
                                           "type": "value_error"}]) from None

    return cache.get(("trials", identity, *sorted(query.items())), compute)


def cached_trials(store: Store, cache: ReadCache, study_id: str) -> list[views.Numbered]:
    """(number, stage, FrozenTrial) for every trial; rows are built for a page only."""
    return _trials(store, cache, _identity(store, study_id))


def _trials(store: Store, cache: ReadCache, identity: StudyIdentity) -> list[views.Numbered]:
    return cache.get(("trials", identity), lambda: list(views.all_trials(store, identity.name)))


@router.get("/studies/{study_id}/trials/{number}", response_model=TrialDetail, responses=ERRORS)
def get_trial(store: StoreDep, study_id: str, number: Annotated[int, Path(ge=0)]) -> Any:
    """One trial: parameters, state, status and reason, and every epoch's metrics."""
    store.study(study_id)
    return views.trial_detail(store, study_id, number)


