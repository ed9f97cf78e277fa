"""Queries on the outbox that the core needs inside its own transactions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Identity, OutboxItem

_outbox: Any = OutboxItem.__table__
_ADD = insert(_outbox).returning(_outbox.c.id, sort_by_parameter_order=True)


def lane_of(platform: str, chat_id: str) -> str:
    """The lane of a platform chat: its messages go out one after the other."""
    return f"{platform}:{chat_id}"


async def add_replies(session: AsyncSession, platform: str, inbox_id: int,
                      rows: Sequence[tuple[str, dict[str, Any], dict[str, Any], str]],
                      now: datetime) -> list[int]:
    """Write the replies to an inbox item, in order, in the caller's transaction; their ids.

    Each row is `(chat_id, message as a dict, extras, lane)`; an empty lane is the chat's.
    One INSERT ... RETURNING, not the ORM's unit of work (a reply row is never read back in
    the transaction that writes it)."""
    if not rows:
        return []
    values = [{"platform": platform, "chat_id": chat_id, "message": message,
               "extras": dict(extras), "lane": lane or lane_of(platform, chat_id),
               "inbox_id": inbox_id, "created_at": now, "not_before": now}
              for chat_id, message, extras, lane in rows]
    return list((await session.execute(_ADD, values)).scalars())


async def resume_waiting(
    session: AsyncSession, platform: str, user_id: str, now: datetime
) -> int:
    """Make unsent items for this account (or its person) due now; returns how many."""
    identity = (await session.execute(
        select(Identity.person_id, Identity.chat_id).where(Identity.platform == platform,
                                                           Identity.user_id == user_id)
    )).first()
    person_id = identity.person_id if identity else None
    chats = {user_id} | ({identity.chat_id} if identity and identity.chat_id else set())
    for_account = and_(OutboxItem.platform == platform, OutboxItem.chat_id.in_(chats))
    target = or_(for_account, OutboxItem.person_id == person_id) if person_id else for_account
    result = await session.execute(
        update(OutboxItem)
        .where(OutboxItem.status == "pending", OutboxItem.not_before > now, target)
        .values(not_before=now)
    )
    # Being heard from again makes the account reachable again.
    await session.execute(
        update(Identity).where(Identity.platform == platform, Identity.user_id == user_id,
                               Identity.unreachable_since.is_not(None))
        .values(unreachable_since=None, unreachable_reason=""))
    return int(getattr(result, "rowcount", 0) or 0)
