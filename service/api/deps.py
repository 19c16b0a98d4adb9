"""What endpoints take from the app, as annotated types: `store: StoreDep`.

The getters here are the only code of the endpoints that reads `app.state` (filled by
service/app.py; the login's limiter, a part of the pages, is theirs: service/web/pages.py).
A test swaps one through `app.dependency_overrides[get_store]`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from stagetune.service.auth import Sessions, caller, sessions
from stagetune.service.cache import ReadCache
from stagetune.service.cluster_view import ClusterView
from stagetune.service.figures import FigureCache
from stagetune.service.settings import Settings
from stagetune.service.supervisor import Supervisor
from stagetune.studies.store import Store


def get_store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def get_app_settings(request: Request) -> Settings:
    """The app's settings (create_app's), which tests build for the app they make."""
    return request.app.state.settings  # type: ignore[no-any-return]


def get_supervisor(request: Request) -> Supervisor:
    return request.app.state.supervisor  # type: ignore[no-any-return]


def get_read_cache(request: Request) -> ReadCache:
    return request.app.state.read_cache  # type: ignore[no-any-return]


def get_figures(request: Request) -> FigureCache:
    return request.app.state.figures  # type: ignore[no-any-return]


def get_cluster(request: Request) -> ClusterView:
    return request.app.state.cluster  # type: ignore[no-any-return]


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SupervisorDep = Annotated[Supervisor, Depends(get_supervisor)]
ReadCacheDep = Annotated[ReadCache, Depends(get_read_cache)]
FiguresDep = Annotated[FigureCache, Depends(get_figures)]
ClusterDep = Annotated[ClusterView, Depends(get_cluster)]
SessionsDep = Annotated[Sessions, Depends(sessions)]
# the current user: the owner of the request's token (or its session's); "" on a service
# without tokens, whose callers cannot be told apart
CallerDep = Annotated[str, Depends(caller)]
