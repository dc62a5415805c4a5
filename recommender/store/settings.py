"""The service's own settings kept in its database: the model version last served, and the
experiments' promotions.

Every replica reads the served version at start: one that cannot load ``models/current``
(broken, half copied) serves the version the others last served instead of failing to boot.
Every replica reads the promotions every half minute: promoting a challenger reaches them
all without a restart.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

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


PROMOTIONS = "experiment_promotions"


def promotions(database: Database) -> list[dict[str, str]]:
    """Every promotion recorded, oldest first: ``experiment``, ``arm``, ``at``, ``by``,
    ``reason``."""
    text = read_setting(database, PROMOTIONS)
    return json.loads(text) if text else []


def promoted_arm(database: Database, experiment: str) -> str | None:
    """The arm of ``experiment`` that now serves every customer, or None (the split)."""
    found = [p["arm"] for p in promotions(database) if p["experiment"] == experiment]
    return found[-1] if found else None


def record_promotion(database: Database, experiment: str, arm: str, by: str,
                     reason: str) -> dict[str, str]:
    """Record that ``arm`` now serves every customer of ``experiment``; the history is kept
    (who, when, why), so a promotion can always be traced."""
    entry = {"experiment": experiment, "arm": arm, "at": datetime.now(UTC).isoformat(),
             "by": by, "reason": reason}
    write_setting(database, PROMOTIONS, json.dumps([*promotions(database), entry]))
    return entry
