"""The models' base: naming conventions, the timestamp type, enums as checked strings."""

from __future__ import annotations

from typing import Any

from sqlalchemy import DateTime, Enum, MetaData, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = DateTime(timezone=True)


def checked_enum(cls: type, name: str) -> Enum:
    # VARCHAR + a named CHECK rather than a PostgreSQL ENUM type: adding a member later is
    # a constraint swap, not an ALTER TYPE that cannot run inside a transaction.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)




def uuid_primary_key() -> Any:
    """A random UUID primary key, made by the database (``gen_random_uuid()``)."""
    return mapped_column(UUID(as_uuid=True), primary_key=True,
                         server_default=text("gen_random_uuid()"))
