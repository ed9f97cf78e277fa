"""membership requests for a new member; a command waiting on "continue or drop the form?"

Revision ID: 0008
Revises: 0003
Create Date: 2026-12-01 09:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('membership_request', schema=None) as batch_op:
        batch_op.alter_column('member_id', existing_type=ID, nullable=True)
        batch_op.add_column(sa.Column('new_member', sa.String(length=120), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('new_member_region', sa.String(length=64),
                                      nullable=False, server_default=''))
    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.add_column(sa.Column('switch_to', sa.Text(), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.drop_column('switch_to')
    with op.batch_alter_table('membership_request', schema=None) as batch_op:
        batch_op.drop_column('new_member_region')
        batch_op.drop_column('new_member')
        batch_op.alter_column('member_id', existing_type=ID, nullable=False)
