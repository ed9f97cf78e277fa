"""What operators read about delivery: `fpbot outbox failed`."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from storage.db import Database
from storage.models import Identity, OutboxItem


async def failed_deliveries(db: Database, limit: int = 200) -> tuple[list[str], list[str]]:
    """One line per message given up (newest first), and one per unreachable account."""
    async with db.transaction() as session:
        rows = list(await session.scalars(
            select(OutboxItem).where(OutboxItem.status == "failed")
            .order_by(OutboxItem.failed_at.desc(), OutboxItem.id.desc()).limit(limit)))
        accounts = list(await session.scalars(
            select(Identity).where(Identity.unreachable_since.is_not(None))
            .options(selectinload(Identity.person)).order_by(Identity.unreachable_since)))
    failed = []
    for row in rows:
        to = f"person #{row.person_id}" if row.person_id else f"{row.platform} chat {row.chat_id}"
        when = f"{row.failed_at:%Y-%m-%d %H:%M} UTC" if row.failed_at else "?"
        failed.append(f"#{row.id}  {when}  {row.message.get('key', '?')} to {to}  "
                      f"after {row.attempts} attempt(s): {row.last_error}")
    unreachable = [
        f"{i.person.name} <{i.person.email}>: unreachable on {i.platform.title()} since "
        f"{i.unreachable_since:%Y-%m-%d %H:%M} UTC ({i.unreachable_reason})"
        for i in accounts if i.unreachable_since is not None]
    return failed, unreachable
