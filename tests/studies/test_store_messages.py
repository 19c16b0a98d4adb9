"""A store error tells a client what failed, never the database URL, host or driver text;
the log keeps them (issue 13, item 11)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.engine import make_url

from stagetune.studies.errors import StoreError
from stagetune.studies.search.stages import ORDER
from stagetune.studies.store import Store


def test_a_database_error_names_no_url_and_the_log_has_it(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(postgres_url)
    url = make_url(postgres_url)
    with caplog.at_level(logging.WARNING, logger="stagetune.studies.store"), \
            pytest.raises(StoreError) as info:
        # PostgreSQL's JSON has no NaN: what a spec with NaN once reached
        store.open_study("nan", {"fixed": {"lr": float("nan")}}, list(ORDER))
    message = str(info.value)
    assert message.startswith("database error (") and "server's log has the detail" in message
    for secret in [postgres_url, "postgresql", str(url.host), str(url.database), "NaN"]:
        assert secret not in message
    assert url.render_as_string(hide_password=True) in caplog.text
    assert "invalid input syntax for type json" in caplog.text


def test_a_url_that_cannot_be_used_is_not_echoed() -> None:
    with pytest.raises(StoreError) as info:
        Store("notadialect://admin:secret@db.internal/prod")
    assert "db.internal" not in str(info.value) and "secret" not in str(info.value)
    assert str(info.value).startswith("cannot use the database URL (")
