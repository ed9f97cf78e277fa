"""Queries on the outbox that the core needs inside its own transactions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Identity, OutboxItem


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
        .where(OutboxItem.sent_at.is_(None), OutboxItem.not_before > now, target)
        .values(not_before=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)
