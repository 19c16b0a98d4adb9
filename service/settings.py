"""One settings object per process, read from STAGETUNE_* environment variables
(and RAY_ADDRESS, which Ray itself reads)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # an empty variable (as compose passes an unset one) means the default
    model_config = SettingsConfigDict(env_prefix="STAGETUNE_", extra="ignore", env_ignore_empty=True)

    database_url: str = "sqlite:///stagetune.db"
    ray_address: str | None = Field(None, validation_alias="RAY_ADDRESS")
    data_dir: Path = Path("data")  # datasets and the winners' weights (workers read it too)
    plugins: str = ""  # comma-separated modules that register models and datasets
    api_tokens: str = ""  # comma-separated bearer tokens; empty: no auth, loopback only
    allow_download: bool = False
    host: str | None = None  # default: 127.0.0.1 without tokens, 0.0.0.0 with them
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(1_000_000, ge=1_000)
    # browser sessions (see service/auth.py): the key that signs them; empty: a random key
    # per start, so a restart logs every browser out, which is all a session costs
    session_secret: str = ""
    session_max_age_s: int = Field(12 * 3600, ge=60)
    secure_cookies: bool | None = None  # None: Secure when the request came over https
    public_origin: str | None = None  # what browsers call the service; default: the request's
    login_max_failures: int = Field(10, ge=1)  # failed logins per client per window ...
    login_window_s: float = Field(60.0, gt=0)  # ... before 429 with Retry-After

    @property
    def tokens(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.api_tokens.split(",") if t.strip())

    @property
    def bind_host(self) -> str:
        if self.host:
            return self.host
        return "0.0.0.0" if self.tokens else "127.0.0.1"


@lru_cache
def get_settings() -> Settings:
    return Settings()
