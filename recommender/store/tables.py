"""The stores' tables as SQLAlchemy Core sees them: what the queries are written against.

They mirror the head revision of ``migrations`` (which creates them); a change here comes
with a new migration. A test checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

metadata = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

responses = sa.Table(
    "responses", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("product_id", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_version", sa.Text, nullable=True),
    sa.Column("life_stage", sa.Text, nullable=True),
    sa.Column("arm", sa.Text, nullable=True),
    sa.Column("propensity", sa.Float, nullable=True),
    sa.Column("factor", sa.Float, nullable=True),
    sa.Index("responses_by_customer_time", "customer_id", "recorded_at"),
    sa.Index("responses_by_time", "recorded_at"),
    sqlite_autoincrement=True)

policies = sa.Table(
    "policies", metadata,
    sa.Column("policy_hash", sa.Text, primary_key=True),
    sa.Column("policy_version", sa.Text, nullable=False),
    sa.Column("policy_text", sa.Text, nullable=False))

decision_packs = sa.Table(
    "decision_packs", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False))

decisions = sa.Table(
    "decisions", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("customer_hash", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("policy_version", sa.Text, nullable=False),
    sa.Column("inputs_fingerprint", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("policy_hash", sa.Text, nullable=False),
    sa.Column("pack_id", sa.Text, nullable=True),
    sa.Column("pack_row", sa.Integer, nullable=True),
    sa.Index("decisions_by_customer", "customer_hash", "created_at"))

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))

service_settings = sa.Table(
    "service_settings", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False))


def insert_new(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert the rows whose primary key is not there yet (the others are left as they are):
    each dialect's own ON CONFLICT DO NOTHING."""
    if not rows:
        return
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    conn.execute(dialect.insert(table).on_conflict_do_nothing(), list(rows))
