"""The stores: responses, the decision log (decisions, policies, packs), API keys and the
service's own settings (the served version, the decision key's check value).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# 64-bit on PostgreSQL; SQLite's autoincrement needs its own INTEGER PRIMARY KEY
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("outcome IN ('shown', 'accepted', 'declined')",
                           name="responses_outcome"),
        sqlite_autoincrement=True)
    op.create_index("responses_by_customer_time", "responses", ["customer_id", "recorded_at"])
    op.create_table(
        "policies",
        sa.Column("policy_hash", sa.Text, primary_key=True),
        sa.Column("policy_version", sa.Text, nullable=False),
        sa.Column("policy_text", sa.Text, nullable=False))
    op.create_table(
        "decision_packs",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False))
    op.create_table(
        "decisions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("created_at", sa.Text, nullable=False),  # ISO 8601 UTC: text order is time
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("customer_hash", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("policy_version", sa.Text, nullable=False),
        sa.Column("inputs_fingerprint", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("policy_hash", sa.Text, nullable=False),
        sa.Column("pack_id", sa.Text, nullable=True),
        sa.Column("pack_row", sa.Integer, nullable=True))
    op.create_index("decisions_by_customer", "decisions", ["customer_hash", "created_at"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("hash", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "service_settings",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False))


def downgrade() -> None:
    for table in ("service_settings", "api_keys", "decisions", "decision_packs", "policies",
                  "responses"):
        op.drop_table(table)
