"""Alembic environment for stagetune's own tables (Optuna migrates its tables itself)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from stagetune.studies.store._tables import Base

# Optuna keeps its revision in `alembic_version`; ours must not share it.
VERSION_TABLE = "stagetune_alembic_version"


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    return type_ != "table" or name.startswith("stagetune_")


config = context.config
connectable = config.attributes.get("connection")
if connectable is None:
    connectable = engine_from_config(config.get_section(config.config_ini_section) or {},
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata,
                          version_table=VERSION_TABLE, include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connectable, target_metadata=Base.metadata,
                      version_table=VERSION_TABLE, include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()
