"""What a use case gets besides the message: the open transaction, the caller, the clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.clock import Clock
from handlers.types import Incoming, Outgoing
from messages import Renderer
from storage.models import (
    MEMBER_ROLES,
    NETWORK_ROLES,
    AuditEntry,
    Identity,
    Member,
    OutboxItem,
    Person,
    Role,
    RoleName,
)


@dataclass(frozen=True)
class CoreConfig:
    """Settings the use cases read."""

    invite_ttl: timedelta = timedelta(days=14)
    link_ttl: timedelta = timedelta(minutes=30)
    timezone: str = "UTC"
    # The newsletter preview page (issue 11): signs its links, and where `fpbot serve` is.
    secret_key: str = field(default="", repr=False)
    public_url: str = "http://127.0.0.1:8080"
    preview_ttl: timedelta = timedelta(days=3)


@dataclass
class Context:
    """One request's view of the world; lives for one transaction."""

    session: AsyncSession
    clock: Clock
    renderer: Renderer
    config: CoreConfig
    incoming: Incoming
    identity: Identity | None = None
    person: Person | None = None
    commands: Sequence[Any] = ()  # every Command, for /help
    forms: Mapping[str, Any] = field(default_factory=dict)  # every Form, by name
    outbox_written: list[int] = field(default_factory=list)

    # -- who is asking ------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        return self.clock.now()

    @property
    def locale(self) -> str:
        if self.person is not None:
            return self.person.locale
        return self.incoming.locale or self.renderer.default_locale

    @property
    def roles(self) -> list[Role]:
        return list(self.person.roles) if self.person is not None else []

    @property
    def is_secretariat(self) -> bool:
        return any(r.role in NETWORK_ROLES for r in self.roles)

    def own_members(self) -> list[Member]:
        """The members this person speaks for, as focal point or alternate."""
        seen: dict[int, Member] = {}
        for r in self.roles:
            if r.role in MEMBER_ROLES and r.member is not None:
                seen.setdefault(r.member.id, r.member)
        return sorted(seen.values(), key=lambda m: m.name)

    def may_act_for(self, member: Member) -> bool:
        """Focal points act for their own members only; the secretariat for anyone."""
        return self.is_secretariat or any(m.id == member.id for m in self.own_members())

    def label(self, key: str, **context: Any) -> str:
        """A plain-text sentence (button labels, field errors) in the caller's locale."""
        return self.renderer.render(key, self.locale, "plain", **context)

    # -- side effects, written in the same transaction ----------------------------------
    async def audit(self, action: str, subject: str = "", **details: Any) -> None:
        """Record who did what."""
        self.session.add(
            AuditEntry(
                at=self.now,
                actor_id=self.person.id if self.person else None,
                action=action,
                subject=subject,
                details=details,
            )
        )

    async def notify(
        self,
        message: Outgoing,
        *,
        person: Person | None = None,
        platform: str | None = None,
        chat_id: str | None = None,
        dedupe_key: str | None = None,
        not_before: datetime | None = None,
    ) -> None:
        """Queue a message for someone else; the outbox sends it once this transaction commits."""
        if person is None and not (platform and chat_id):
            raise ValueError("notify needs a person or a platform chat")
        item = OutboxItem(
            person_id=person.id if person else None,
            platform=platform,
            chat_id=chat_id,
            dedupe_key=dedupe_key,
            message=message.to_dict(),
            created_at=self.now,
            not_before=not_before or self.now,
            lane=f"person:{person.id}" if person else f"{platform}:{chat_id}",
        )
        self.session.add(item)
        await self.session.flush()
        self.outbox_written.append(item.id)

    async def notify_secretariat(self, message: Outgoing) -> int:
        """Queue a message for every secretariat officer; returns how many were queued."""
        people = await secretariat(self.session)
        for person in people:
            await self.notify(message, person=person)
        return len(people)


async def secretariat(session: AsyncSession) -> list[Person]:
    rows = await session.scalars(
        select(Person)
        .join(Role, Role.person_id == Person.id)
        .where(Role.role == RoleName.SECRETARIAT)
        .order_by(Person.id)
        .distinct()
    )
    return list(rows)
