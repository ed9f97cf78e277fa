"""one delivery path: replies in the outbox, instance liveness instead of leases

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 08:40:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
import storage.models


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'instance',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('host', sa.String(length=255), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('started_at', storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column('heartbeat_at', storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column('beats', sa.BigInteger(), nullable=False),
        sa.Column('polls', sa.String(length=120), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'store_identity',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('uid', sa.String(length=40), nullable=False),
        sa.Column('created_at', storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('identity', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unreachable_since', storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('unreachable_reason', sa.String(length=200), nullable=False, server_default=''))
    # Replies no longer wait in the inbox: unanswered ones are dropped with the lease columns
    # (a bot upgraded with replies in flight answers them again from the platform's redelivery).
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=40), nullable=True))
        batch_op.drop_column('replies')
        batch_op.drop_column('sending_until')
        batch_op.drop_column('replied_at')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('inbox_id', storage.models.Id, nullable=True))
        batch_op.add_column(sa.Column('extras', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('lane', sa.String(length=100), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('status', sa.String(length=8), nullable=False, server_default='pending'))
        batch_op.add_column(sa.Column('failed_at', storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.alter_column('claimed_by', existing_type=sa.String(length=64), type_=sa.String(length=40), existing_nullable=True)
        batch_op.drop_column('claimed_until')
        batch_op.drop_index('ix_outbox_due')
        batch_op.create_index('ix_outbox_due', ['status', 'not_before'], unique=False)
        batch_op.create_index('ix_outbox_inbox', ['inbox_id'], unique=False)
        batch_op.create_foreign_key('fk_outbox_inbox', 'inbox', ['inbox_id'], ['id'], ondelete='SET NULL')
    op.execute("UPDATE outbox SET status = 'sent' WHERE sent_at IS NOT NULL")
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.alter_column('extras', server_default=None)
        batch_op.alter_column('lane', server_default=None)
        batch_op.alter_column('status', server_default=None)
    with op.batch_alter_table('identity', schema=None) as batch_op:
        batch_op.alter_column('unreachable_reason', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint('fk_outbox_inbox', type_='foreignkey')
        batch_op.drop_index('ix_outbox_inbox')
        batch_op.drop_index('ix_outbox_due')
        batch_op.create_index('ix_outbox_due', ['sent_at', 'not_before'], unique=False)
        batch_op.add_column(sa.Column('claimed_until', storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.alter_column('claimed_by', existing_type=sa.String(length=40), type_=sa.String(length=64), existing_nullable=True)
        for column in ('failed_at', 'status', 'lane', 'extras', 'inbox_id'):
            batch_op.drop_column(column)
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('replied_at', storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('sending_until', storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('replies', sa.JSON(), nullable=True))
        batch_op.drop_column('claimed_by')
    with op.batch_alter_table('identity', schema=None) as batch_op:
        batch_op.drop_column('unreachable_reason')
        batch_op.drop_column('unreachable_since')
    op.drop_table('store_identity')
    op.drop_table('instance')
