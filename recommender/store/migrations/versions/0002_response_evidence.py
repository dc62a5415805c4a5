"""What a response teaches: the model version, life stage and experiment arm of the customer
when the offer was answered, the propensity the model predicted for it (the prior the
adaptive correction is measured against) and the correction factor in use. All nullable:
responses recorded before this revision carry no evidence and are left out of it.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = (("model_version", sa.Text), ("life_stage", sa.Text), ("arm", sa.Text),
            ("propensity", sa.Float), ("factor", sa.Float))


def upgrade() -> None:
    for name, kind in _COLUMNS:
        op.add_column("responses", sa.Column(name, kind, nullable=True))
    # the evidence and the reports read a window of time across all customers
    op.create_index("responses_by_time", "responses", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("responses_by_time", "responses")
    with op.batch_alter_table("responses") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
