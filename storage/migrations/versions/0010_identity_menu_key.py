"""each account remembers the command menu it was given (a fingerprint)

The Telegram adapter set a person's command menu after every reply whose menu differed from
what the process remembered, so every restart set it again for everyone who wrote. The
identity now keeps a fingerprint of the menu it was last given: a menu is set only when the
person's set of commands changes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 15:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('identity', sa.Column('menu_key', sa.String(length=64), nullable=False,
                                        server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('identity') as batch:
        batch.drop_column('menu_key')
