"""One settings object per process, read from STAGETUNE_* environment variables."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAGETUNE_", extra="ignore")

    database_url: str = "sqlite:///stagetune.db"


@lru_cache
def get_settings() -> Settings:
    return Settings()
