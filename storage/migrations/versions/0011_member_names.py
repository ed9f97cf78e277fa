"""members are found from what someone typed by an index of their folded names

`find_member` read every member and compared names in Python. Each way a member is written
(code, name, aliases; folded: case, dashes and spacing ignored) is now a row of
`member_name`, written with the member, and looked up by its key.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 15:40:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _fold(text: str) -> str:  # storage.models.fold_name as of this revision
    return " ".join(text.casefold().replace("-", " ").split())


def upgrade() -> None:
    names = op.create_table(
        'member_name',
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=False),
        sa.ForeignKeyConstraint(['member_id'], ['member.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('name', 'member_id'),
    )
    members = op.get_bind().execute(sa.text("SELECT id, code, name, aliases FROM member"))
    rows = [{"name": n, "member_id": m.id}
            for m in members
            for n in sorted({_fold(x) for x in (m.code, m.name, *m.aliases.split(";"))
                             if _fold(x)})]
    if rows:
        op.bulk_insert(names, rows)


def downgrade() -> None:
    op.drop_table('member_name')
