"""reminders and digests each in their person's lane (they all shared the empty lane)

Rows the scheduler queued had no lane, so every reminder and digest of the Network stood in
one line: one person without a reachable account held back everyone queued after them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 13:00:00.000000
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE outbox SET lane = 'person:' || person_id "
               "WHERE lane = '' AND person_id IS NOT NULL")


def downgrade() -> None:
    pass  # a lane of its own is what every row should have had
