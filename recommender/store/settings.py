"""The service's own settings kept in its database: the model version last served.

Every replica reads it at start: one that cannot load ``models/current`` (broken, half
copied) serves the version the others last served instead of failing to boot.
"""

from __future__ import annotations

import sqlalchemy as sa

from .database import Database
from .tables import insert_new, service_settings

SERVED_VERSION = "served_version"
_VALUE = service_settings.c.value


def read_setting(database: Database, name: str) -> str | None:
    """The setting's value; None if it was never written."""
    with database.connect() as conn:
        return conn.execute(sa.select(_VALUE).where(service_settings.c.name == name)).scalar()


def write_setting(database: Database, name: str, value: str) -> None:
    """Set the setting (one row, replaced whole)."""
    with database.begin(write=True) as conn:
        updated = conn.execute(sa.update(service_settings).where(service_settings.c.name == name)
                               .values(value=value)).rowcount
        if not updated:
            insert_new(conn, service_settings, [{"name": name, "value": value}])
