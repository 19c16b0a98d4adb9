"""One settings object per process, read from STAGETUNE_* environment variables (and
RAY_ADDRESS, which Ray itself reads).

It lives here, in the lowest layer, because the workers read it too (the data folder,
the plugins); `service.settings` re-exports it. Reach it through `get_settings()`, cached
per process; a test that changes the environment calls `get_settings.cache_clear()`, or
builds its own `Settings(...)` and passes it on.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")  # as a Host header names them


class Settings(BaseSettings):
    # an empty variable (as compose passes an unset one) means the default
    model_config = SettingsConfigDict(env_prefix="STAGETUNE_", extra="ignore", env_ignore_empty=True)

    # -- the store and the cluster
    database_url: str = "sqlite:///stagetune.db"  # the store, a SQLAlchemy URL; `--db` wins
    # how long a runner waits for a database that is away (its connections, its writes,
    # resuming its study); the service's requests do not wait (studies.store.fail_fast)
    db_retry_seconds: float = Field(60.0, ge=0)
    # the Ray cluster to join; unset: `serve`, `run` and `resume` start a local one
    ray_address: str | None = Field(None, validation_alias="RAY_ADDRESS")
    # a Ray that `serve`, `run` or `resume` starts for itself listens on 127.0.0.1 only
    ray_loopback: bool = True
    ray_dashboard: bool = False  # Ray's dashboard on the Ray that stagetune starts (port 8265)
    # how long a Ray that stagetune starts for itself may take to come up: Ray gives up after
    # 30 s on a busy machine, and is tried again until this is spent
    ray_start_seconds: float = Field(120.0, ge=0)
    # nodes may join later (an autoscaling cluster): a trial that no node can hold now is
    # accepted and waits, saying so, instead of being refused at submit
    cluster_may_grow: bool = False
    # studies whose runners run at once; the others wait as `pending` in the order they were
    # queued (service/admission.py). None: one per CPU of the cluster and per GiB of the head
    # node's memory for Ray (the runners live there), whichever is fewer, and at least one
    max_running_studies: int | None = Field(None, ge=1)

    # -- data and plugins (the workers read these)
    data_dir: Path = Path("data")  # datasets and the winners' weights
    allow_download: bool = False  # torchvision may download mnist, cifar10, cifar100 into data_dir
    # where Debian's dataset-fashion-mnist package puts Fashion-MNIST's files
    fashion_mnist_system_dir: Path = Path("/usr/share/datasets/fashion-mnist")
    # DataLoader worker processes per streamed run; None: from the trial's CPU budget.
    loader_workers: int | None = Field(None, ge=0, le=64)
    plugins: str = ""  # comma-separated modules that register models and datasets
    plugins_dir: Path | None = None  # a folder put on the import path first

    # -- the API
    api_tokens: str = ""  # comma-separated bearer tokens; empty: no auth, loopback only
    host: str | None = None  # default: 127.0.0.1 without tokens, 0.0.0.0 with them
    port: int = Field(8000, ge=1, le=65535)  # the API's port
    max_body_bytes: int = Field(1_000_000, ge=1_000)  # a larger request body is a 413
    # pending studies one token may have queued (without tokens, the whole service: it
    # listens on loopback for one user); a submit or resume beyond it is a 429
    max_pending_per_token: int = Field(50, ge=1)
    # browser sessions (see service/auth.py): the key that signs them; empty: a random key
    # per start, so a restart logs every browser out, which is all a session costs
    session_secret: str = ""
    session_max_age_s: int = Field(12 * 3600, ge=60)  # a browser session's life, in seconds
    secure_cookies: bool | None = None  # None: Secure when the request came over https
    public_origin: str | None = None  # what browsers call the service; default: the request's
    # the Host names it answers to (comma-separated, `*.example.com` allowed, `*` any): any
    # other is refused, so a page cannot reach a loopback service through a name of its own
    # (DNS rebinding); default: on a loopback address the loopback names and the public
    # origin's, else `*` (warned)
    allowed_hosts: str | None = None
    # proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (uvicorn's
    # --forwarded-allow-ips): IP addresses or networks, comma-separated, or `*`; empty: none,
    # and the peer's address is the client's (the login's limit counts by it)
    forwarded_allow_ips: str = ""
    login_max_failures: int = Field(10, ge=1)  # failed logins per client per window ...
    login_window_s: float = Field(60.0, gt=0)  # ... before 429 with Retry-After

    # -- logs
    log_level: LogLevel = "warning"  # stagetune's and uvicorn's loggers, in any case
    access_log: bool = False  # uvicorn's access log, one line a request, at any log level

    # -- integrations, called when a study ends (studies/reporting/study_end.py)
    mlflow_tracking_uri: str | None = None  # one MLflow run per trial; needs the `mlflow` extra
    webhook_url: str | None = None  # POSTed a JSON summary of each study that ends
    webhook_token: str = ""  # sent as `Authorization: Bearer <token>` when set
    webhook_timeout_s: float = Field(10.0, gt=0, le=120)  # each attempt's timeout, in seconds

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("webhook_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("STAGETUNE_WEBHOOK_URL takes an http:// or https:// URL")
        return value

    @field_validator("public_origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        try:
            _ = parts.port  # one that is not a number raises
            host = _host_name(parts.hostname or "*")  # so does a stray character
            ok = (parts.scheme in ("http", "https") and "*" not in host and not parts.username
                  and parts.path in ("", "/") and not parts.query and not parts.fragment)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("STAGETUNE_PUBLIC_ORIGIN is the scheme, host and port browsers "
                             f"use, e.g. https://stagetune.example.com:8443; got {value!r}")
        return value.strip().rstrip("/")

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: str | None) -> str | None:
        if value is None:
            return None
        names = [_host_name(n) for n in value.split(",") if n.strip()]
        if not names:
            raise ValueError("STAGETUNE_ALLOWED_HOSTS names at least one host, or * for any")
        return ",".join(names)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for item in (i.strip() for i in value.split(",") if i.strip()):
            try:
                if item != "*":
                    ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"STAGETUNE_FORWARDED_ALLOW_IPS lists the proxies' IP addresses "
                                 f"or networks (e.g. 127.0.0.1,10.0.0.0/8), or *; got {item!r}"
                                 ) from None
        return value

    @property
    def host_names(self) -> list[str]:
        """The Host names the API answers to, as Starlette's TrustedHostMiddleware takes
        them (an IPv6 address in brackets); ["*"] for any."""
        if self.allowed_hosts is not None:
            return self.allowed_hosts.split(",")
        if not self.on_loopback:
            return ["*"]
        public = urlsplit(self.public_origin or "").hostname  # a proxy in front sends it
        return [*LOOPBACK_NAMES, *([_host_name(public)] if public else [])]

    @property
    def on_loopback(self) -> bool:
        """Whether the API listens on a loopback address only."""
        host = self.bind_host.strip("[]")
        try:
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def tokens(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.api_tokens.split(",") if t.strip())

    @property
    def bind_host(self) -> str:
        if self.host:
            return self.host
        return "0.0.0.0" if self.tokens else "127.0.0.1"

    @property
    def modules(self) -> list[str]:
        """The plugin modules STAGETUNE_PLUGINS names, in order."""
        return [m.strip() for m in self.plugins.split(",") if m.strip()]


def _host_name(given: str) -> str:
    """One allowed Host name in the form Starlette compares: lower case, an IPv6 address in
    brackets; a port, a scheme or a misplaced wildcard is refused, naming what is allowed."""
    name = given.strip().lower()
    try:
        return f"[{ipaddress.IPv6Address(name.strip('[]'))}]"
    except ValueError:
        pass
    wildcard = name.startswith("*.") and "*" not in name[1:]
    if name != "*" and not wildcard and any(c in name for c in ":/*@ "):
        raise ValueError(f"STAGETUNE_ALLOWED_HOSTS lists host names or addresses without a "
                         f"scheme or port (e.g. localhost,stagetune.example.com,*.lab.example, "
                         f"or * for any); got {given.strip()!r}")
    return name


@lru_cache
def get_settings() -> Settings:
    return Settings()
