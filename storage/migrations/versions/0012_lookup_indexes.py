"""an edition's updates, an update's attachments and a member's people are found by index

The newsletter draft reads an edition's updates with their attachments: without an index on
`update_attachment.update_id` each update's attachments were looked for by scanning the
table, and an edition's updates by scanning every update. A member's focal points (the
spotlight, a deadline's audience) scanned every role.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 18:00:00.000000
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_attachment_update', 'update_attachment', ['update_id'])
    op.create_index('ix_update_edition', 'national_update', ['edition_id'])
    op.create_index('ix_role_member', 'role', ['member_id'])


def downgrade() -> None:
    op.drop_index('ix_role_member', table_name='role')
    op.drop_index('ix_update_edition', table_name='national_update')
    op.drop_index('ix_attachment_update', table_name='update_attachment')
