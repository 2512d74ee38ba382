"""Alembic environment: the URL comes from the caller's config, else from DATABASE_URL."""

from __future__ import annotations

import os
import re

from alembic import context
from sqlalchemy import create_engine, pool

from app.config import normalize_database_url
from app.models import Base

config = context.config
target_metadata = Base.metadata

#: The history's partitions (app.history.partitions): created and dropped at run time by
#: the maintenance, not by migrations, so autogenerate does not compare them.
_PARTITION = re.compile(r"^(invocations|invocation_attempts)_(p\d{8}|default)$")


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    return not (type_ == "table" and name is not None and _PARTITION.match(name))


def _include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # A foreign key to a partitioned table is one constraint per referenced partition
    # in the catalog; the one on the parent is the model's.
    if type_ == "foreign_key_constraint" and reflected:
        referred = getattr(obj, "referred_table", None)
        return not (referred is not None and _PARTITION.match(referred.name))
    return True


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL", "")
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    return normalize_database_url(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      include_name=_include_name,
                          include_object=_include_object)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          include_name=_include_name,
                          include_object=_include_object)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          include_name=_include_name,
                          include_object=_include_object)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
