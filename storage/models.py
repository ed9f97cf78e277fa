"""The store's tables: the Network's members and people, who may do what, and the bot's own state.

Every time is stored in UTC. SQLite hands datetimes back naive and PostgreSQL tz-aware;
`UTCDateTime` makes both come back tz-aware UTC.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    insert,
)
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

Id = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use the clock's aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(AsyncAttrs, DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class RoleName(enum.StrEnum):
    FOCAL_POINT = "focal_point"
    ALTERNATE = "alternate"
    SECRETARIAT = "secretariat"
    CIVIL_SOCIETY = "civil_society"
    ADMIN = "admin"


# Roles that speak for a member; secretariat and admin act for the whole Network.
MEMBER_ROLES = frozenset({RoleName.FOCAL_POINT, RoleName.ALTERNATE})
NETWORK_ROLES = frozenset({RoleName.SECRETARIAT, RoleName.ADMIN})


class Member(Base):
    """A Member State or regional organization of the Network."""

    __tablename__ = "member"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    region: Mapped[str] = mapped_column(String(64))
    aliases: Mapped[str] = mapped_column(String(255), default="")
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)

    def names(self) -> set[str]:
        """Every way the member is written (code, name, aliases), folded."""
        return {fold_name(n) for n in (self.code, self.name, *self.aliases.split(";"))
                if fold_name(n)}


def fold_name(text: str) -> str:
    """A name as people type it, whatever the case, dashes and spacing: "cote d'ivoire"."""
    return " ".join(text.casefold().replace("-", " ").split())


class MemberName(Base):
    """The index by which a member is found from what someone typed: each of its folded names
    (written with the member, see `_index_member_names`)."""

    __tablename__ = "member_name"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("member.id", ondelete="CASCADE"),
                                           primary_key=True)


@event.listens_for(Member, "after_insert")
def _index_member_names(_mapper: Any, connection: Any, member: Member) -> None:
    connection.execute(insert(MemberName), [{"name": n, "member_id": member.id}
                                            for n in sorted(member.names())])


class Person(Base):
    """Someone the Network knows: a focal point, a secretariat officer, a civil society partner."""

    __tablename__ = "person"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    title: Mapped[str] = mapped_column(String(120), default="")
    ministry: Mapped[str] = mapped_column(String(200), default="")
    locale: Mapped[str] = mapped_column(String(8), default="en")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    # Reminders paused up to and including this (local) day; the member's alternates get them.
    away_until: Mapped[date | None] = mapped_column(Date, nullable=True)

    roles: Mapped[list[Role]] = relationship(back_populates="person", lazy="selectin")
    identities: Mapped[list[Identity]] = relationship(back_populates="person", lazy="selectin")


class Role(Base):
    """One role a person holds, for one member (focal point, alternate) or the Network."""

    __tablename__ = "role"
    __table_args__ = (UniqueConstraint("person_id", "member_id", "role", name="uq_role"),
                      Index("ix_role_member", "member_id"))
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("member.id"), nullable=True)
    role: Mapped[str] = mapped_column(String(32))

    person: Mapped[Person] = relationship(back_populates="roles")
    member: Mapped[Member | None] = relationship(lazy="joined")


class Identity(Base):
    """A platform account (Telegram, Slack, console) belonging to a person."""

    __tablename__ = "identity"
    __table_args__ = (UniqueConstraint("platform", "user_id", name="uq_identity"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(64))
    chat_id: Mapped[str] = mapped_column(String(64), default="")
    display_name: Mapped[str] = mapped_column(String(120), default="")
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The platform refused a message for good (blocked the bot, account gone): since when, why.
    unreachable_since: Mapped[datetime | None] = mapped_column(nullable=True)
    unreachable_reason: Mapped[str] = mapped_column(String(200), default="")
    # A fingerprint of the command menu this account was last given ("" none yet): a menu is
    # set on the platform only when the person's set of commands changes.
    menu_key: Mapped[str] = mapped_column(String(64), default="", server_default="")

    person: Mapped[Person] = relationship(back_populates="identities", lazy="joined")


class Chair(Base):
    """The member chairing the Network in a calendar year (the troika is derived from these)."""

    __tablename__ = "chair"
    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    member_id: Mapped[int] = mapped_column(ForeignKey("member.id"))
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)

    member: Mapped[Member] = relationship(lazy="joined")


class Invitation(Base):
    """A one-time code: an invitation to a person, or a link for a second platform account."""

    __tablename__ = "invitation"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))  # "invite" | "link"
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    used_by: Mapped[str | None] = mapped_column(String(100), nullable=True)


class MembershipRequest(Base):
    """Someone asking to join as a member's focal point, waiting for the secretariat.

    The member is one of the Network's, or (no `member_id`) a new one, named in `new_member`
    with its region: approving the request adds it to the Network.
    """

    __tablename__ = "membership_request"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(64))
    chat_id: Mapped[str] = mapped_column(String(64), default="")
    member_id: Mapped[int | None] = mapped_column(ForeignKey("member.id"), nullable=True)
    new_member: Mapped[str] = mapped_column(String(120), default="")
    new_member_region: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(120))
    title: Mapped[str] = mapped_column(String(120))
    ministry: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)

    member: Mapped[Member | None] = relationship(lazy="joined")

    @property
    def member_name(self) -> str:
        """The member asked for: one of the Network's, or the new one's name."""
        return self.member.name if self.member is not None else self.new_member


class AuditEntry(Base):
    """Who did what, and when."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime]
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(120), default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Conversation(Base):
    """A form someone is filling in, step by step; survives restarts."""

    __tablename__ = "conversation"
    __table_args__ = (UniqueConstraint("platform", "user_id", name="uq_conversation"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(64))
    form: Mapped[str] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(64))
    answers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    message_ref: Mapped[str] = mapped_column(String(64), default="")
    version: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # A command that would open another form, waiting for "continue or drop?" (issue 8).
    switch_to: Mapped[str] = mapped_column(Text, default="")


class InboxItem(Base):
    """An update received from a platform, kept until it has been handled.

    Handling writes the replies to the outbox in the same transaction that sets `handled_at`.
    `claimed_by` names the running instance (see `Instance`) working on it; the claim counts
    only while that instance is alive.
    """

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("platform", "key", name="uq_inbox"),
        Index("ix_inbox_pending", "platform", "handled_at"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    handled_at: Mapped[datetime | None] = mapped_column(nullable=True)


class OutboxItem(Base):
    """One message to one chat (a reply, a notice, a reminder), written with the change that
    caused it and sent once by the sender loop (`bot/delivery/`).

    `lane` keeps order: rows of one lane go out one after the other, in id order. `claimed_by`
    is the instance sending it, valid only while that instance is alive. `status` is
    "pending", "sent" or "failed" (with `last_error` saying why).
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "not_before"),
                      Index("ix_outbox_inbox", "inbox_id"))
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    person_id: Mapped[int | None] = mapped_column(
        ForeignKey("person.id", ondelete="CASCADE"), nullable=True
    )
    # Someone who is not a person yet (a membership request) is reached on their platform chat.
    platform: Mapped[str | None] = mapped_column(String(16), nullable=True)
    chat_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(160), unique=True, nullable=True)
    message: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    not_before: Mapped[datetime]
    # A reply: the inbox item it answers, and what the adapter needs to send it (a message to
    # edit, a modal trigger...).
    inbox_id: Mapped[int | None] = mapped_column(
        ForeignKey("inbox.id", ondelete="SET NULL"), nullable=True)
    extras: Mapped[dict[str, Any]] = mapped_column(default=dict)
    lane: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[str] = mapped_column(String(8), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(nullable=True)
    sent_via: Mapped[str | None] = mapped_column(String(16), nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")


class UpdateCategory(enum.StrEnum):
    """The kinds of national update the Network's newsletter draws on."""

    NAP_PROGRESS = "nap_progress"
    POLICY = "policy"
    BEST_PRACTICE = "best_practice"
    EVENT = "event"
    KNOWLEDGE_PRODUCT = "knowledge_product"
    FUNDING = "funding"
    CIVIL_SOCIETY = "civil_society"


class Visibility(enum.StrEnum):
    PUBLIC = "public"  # may go in the newsletter
    NETWORK = "network"  # members of the Network only
    CHATHAM = "chatham"  # may be used, never attributed


class UpdateStatus(enum.StrEnum):
    SUBMITTED = "submitted"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    PUBLISHED = "published"


class NationalUpdate(Base):
    """A national update filed by a focal point for a member, and where it stands in review."""

    __tablename__ = "national_update"
    __table_args__ = (Index("ix_update_status", "status", "submitted_at"),
                      Index("ix_update_edition", "edition_id"))
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # None for a civil society voice, which speaks for `organisation`, not for a member.
    member_id: Mapped[int | None] = mapped_column(ForeignKey("member.id"), nullable=True)
    organisation: Mapped[str] = mapped_column(String(200), default="")
    author_id: Mapped[int] = mapped_column(ForeignKey("person.id"))
    category: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(160))
    body: Mapped[str] = mapped_column(Text)
    links: Mapped[list[Any]] = mapped_column(default=list)
    visibility: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(24), default=UpdateStatus.SUBMITTED)
    section: Mapped[str] = mapped_column(String(32), default="")
    review_note: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    submitted_at: Mapped[datetime]
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The newsletter edition an approved update goes in (issue 11).
    edition_id: Mapped[int | None] = mapped_column(
        ForeignKey("edition.id", name="fk_update_edition"), nullable=True)

    member: Mapped[Member | None] = relationship(lazy="joined")
    author: Mapped[Person] = relationship(lazy="joined", foreign_keys=[author_id])
    attachments: Mapped[list[UpdateAttachment]] = relationship(
        lazy="selectin", order_by="UpdateAttachment.id")

    @property
    def source(self) -> str:
        """Who the update speaks for: its member, or a civil society organisation."""
        return self.member.name if self.member is not None else self.organisation


class UpdateRevision(Base):
    """One version of an update as it was filed or edited: the update's history."""

    __tablename__ = "update_revision"
    __table_args__ = (UniqueConstraint("update_id", "version", name="uq_update_revision"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    update_id: Mapped[int] = mapped_column(ForeignKey("national_update.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(160))
    body: Mapped[str] = mapped_column(Text)
    links: Mapped[list[Any]] = mapped_column(default=list)
    visibility: Mapped[str] = mapped_column(String(16))
    edited_by: Mapped[int] = mapped_column(ForeignKey("person.id"))
    edited_at: Mapped[datetime]


class UpdateAttachment(Base):
    """A file attached to an update; its content stays on the platform until needed."""

    __tablename__ = "update_attachment"
    __table_args__ = (Index("ix_attachment_update", "update_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    update_id: Mapped[int] = mapped_column(ForeignKey("national_update.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(16))
    file_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(String(120))


class NapStage(enum.StrEnum):
    NONE = "none"
    IN_DEVELOPMENT = "in_development"
    ADOPTED = "adopted"


class NapStatus(Base):
    """A member's national (or regional) action plan on WPS, as its focal points report it."""

    __tablename__ = "nap_status"
    member_id: Mapped[int] = mapped_column(ForeignKey("member.id"), primary_key=True,
                                           autoincrement=False)
    stage: Mapped[str] = mapped_column(String(24), default=NapStage.NONE)
    plan_number: Mapped[int | None] = mapped_column(Integer, nullable=True)  # its Nth plan
    year_adopted: Mapped[int | None] = mapped_column(Integer, nullable=True)
    under_review: Mapped[bool] = mapped_column(Boolean, default=False)
    has_indicators: Mapped[bool] = mapped_column(Boolean, default=False)
    has_budget: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)

    member: Mapped[Member] = relationship(lazy="joined")


class NapHistory(Base):
    """Every change to a member's NAP status, as it was after the change."""

    __tablename__ = "nap_history"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("member.id"))
    stage: Mapped[str] = mapped_column(String(24))
    plan_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    year_adopted: Mapped[int | None] = mapped_column(Integer, nullable=True)
    under_review: Mapped[bool] = mapped_column(Boolean)
    has_indicators: Mapped[bool] = mapped_column(Boolean)
    has_budget: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime]
    changed_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)


# --- meetings and registration (issue 10) ---
class MeetingKind(enum.StrEnum):
    ANNUAL = "annual"  # the capital-level meeting hosted by the chair
    NEW_YORK = "new_york"  # a follow-up in New York
    EXPERT_GROUP = "expert_group"
    WEBINAR = "webinar"


class MeetingStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"


class RegistrationStatus(enum.StrEnum):
    CONFIRMED = "confirmed"
    WAITLISTED = "waitlisted"
    PENDING = "pending"  # waiting for the secretariat's approval
    REJECTED = "rejected"
    CANCELLED = "cancelled"


# Registrations that count against a delegation's limit and block a second registration.
ACTIVE_REGISTRATION = (RegistrationStatus.CONFIRMED, RegistrationStatus.WAITLISTED,
                       RegistrationStatus.PENDING)


class Meeting(Base):
    """A meeting of the Network; `confirmed_count` is the seat counter capacity is held on."""

    __tablename__ = "meeting"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    uid: Mapped[str] = mapped_column(String(100), unique=True)  # the calendar event's UID
    title: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(24))
    host_member_id: Mapped[int | None] = mapped_column(ForeignKey("member.id"), nullable=True)
    venue: Mapped[str] = mapped_column(String(300), default="")
    online_url: Mapped[str] = mapped_column(String(500), default="")
    timezone: Mapped[str] = mapped_column(String(64))  # the venue's
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    registration_opens_at: Mapped[datetime]
    registration_closes_at: Mapped[datetime]
    capacity: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: no limit
    confirmed_count: Mapped[int] = mapped_column(Integer, default=0)
    delegation_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    eligible_roles: Mapped[list[Any]] = mapped_column(default=list)
    needs_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    agenda_url: Mapped[str] = mapped_column(String(500), default="")
    chatham_house: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default=MeetingStatus.SCHEDULED)
    sequence: Mapped[int] = mapped_column(Integer, default=0)  # the calendar's SEQUENCE
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    host: Mapped[Member | None] = relationship(lazy="joined")


class Registration(Base):
    """One person's place at a meeting, or on its waitlist; one row per meeting and e-mail."""

    __tablename__ = "registration"
    __table_args__ = (
        UniqueConstraint("meeting_id", "email", name="uq_registration"),
        Index("ix_registration_queue", "meeting_id", "status", "registered_at"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    meeting_id: Mapped[int] = mapped_column(ForeignKey("meeting.id", ondelete="CASCADE"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("member.id"), nullable=True)
    registered_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(120))
    email: Mapped[str] = mapped_column(String(254))
    title: Mapped[str] = mapped_column(String(120), default="")
    role: Mapped[str] = mapped_column(String(32))  # the registrant's Network role
    delegation_role: Mapped[str] = mapped_column(String(16), default="member")
    accessibility: Mapped[str] = mapped_column(Text, default="")
    visa_letter: Mapped[bool] = mapped_column(Boolean, default=False)
    dietary: Mapped[str] = mapped_column(Text, default="")
    chatham_ack: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))
    registered_at: Mapped[datetime]
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    attended_at: Mapped[datetime | None] = mapped_column(nullable=True)

    member: Mapped[Member | None] = relationship(lazy="joined")
    person: Mapped[Person | None] = relationship(lazy="joined", foreign_keys=[person_id])
# --- newsletter (issue 11) ---
class EditionStatus(enum.StrEnum):
    COLLECTING = "collecting"  # approved updates go in
    DRAFTING = "drafting"  # closed for new items; the secretariat polishes the draft
    PUBLISHED = "published"  # frozen and archived


class Edition(Base):
    """One newsletter edition: what it covers, when submissions close, where it stands."""

    __tablename__ = "edition"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    title: Mapped[str] = mapped_column(String(160))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    language: Mapped[str] = mapped_column(String(8), default="en")
    # A plain deadline, counted down to by the reminders (issue 12).
    submission_deadline: Mapped[datetime]
    planned_publication: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default=EditionStatus.COLLECTING)
    created_at: Mapped[datetime]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Spotlight(Base):
    """The member featured in an edition's focal point spotlight: who was featured when."""

    __tablename__ = "spotlight"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("edition.id", ondelete="CASCADE"),
                                            unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("member.id"))
    chosen_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    chosen_at: Mapped[datetime]
    featured_at: Mapped[datetime | None] = mapped_column(nullable=True)  # set at publication

    member: Mapped[Member] = relationship(lazy="joined")


class NewsletterDraft(Base):
    """A compiled draft of an edition and exactly which update versions it holds."""

    __tablename__ = "newsletter_draft"
    __table_args__ = (UniqueConstraint("edition_id", "number", name="uq_draft_number"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("edition.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... within the edition
    fingerprint: Mapped[str] = mapped_column(String(64))
    # [[update_id, version], ...] in the order they appear.
    items: Mapped[list[Any]] = mapped_column(default=list)
    spotlight_member_id: Mapped[int | None] = mapped_column(ForeignKey("member.id"),
                                                            nullable=True)
    created_at: Mapped[datetime]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    final: Mapped[bool] = mapped_column(Boolean, default=False)  # the published edition
    html: Mapped[str] = mapped_column(Text, default="")  # kept for the archive
# --- deadlines, reminders, action points and the digest (issue 12) ---


class DeadlineKind(enum.StrEnum):
    EDITION_SUBMISSION = "edition_submission"
    MEETING_REGISTRATION = "meeting_registration"
    MEETING_REMINDER = "meeting_reminder"
    ACTION_POINT = "action_point"
    CUSTOM = "custom"


class Deadline(Base):
    """A dated obligation: who it is for, when it falls due, and when to remind them.

    `audience` holds `roles` (role names; focal_point/alternate mean "every member"),
    `members` (member ids), `persons` (person ids), `troika` and `chair` (booleans).
    `offsets` are reminder offsets before the deadline: "7d", "2d", "1d", "12h", "morning".
    """

    __tablename__ = "deadline"
    __table_args__ = (UniqueConstraint("kind", "ref_id", name="uq_deadline_ref"),
                      Index("ix_deadline_due", "due_at"))
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    ref_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    title: Mapped[str] = mapped_column(String(200))
    asks: Mapped[str] = mapped_column(Text, default="")
    due_at: Mapped[datetime]
    audience: Mapped[dict[str, Any]] = mapped_column(default=dict)
    offsets: Mapped[list[Any]] = mapped_column(default=list)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    created_at: Mapped[datetime]
    cancelled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)


class DeadlineDone(Base):
    """A member (or a person) that has done what a custom deadline asks."""

    __tablename__ = "deadline_done"
    __table_args__ = (UniqueConstraint("deadline_id", "member_id", "person_id",
                                       name="uq_deadline_done"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    deadline_id: Mapped[int] = mapped_column(ForeignKey("deadline.id", ondelete="CASCADE"))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("member.id"), nullable=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    done_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    done_at: Mapped[datetime]


class Reminder(Base):
    """One reminder of one deadline to one person at one offset: queued once, or skipped."""

    __tablename__ = "reminder"
    __table_args__ = (UniqueConstraint("deadline_id", "person_id", "offset",
                                       name="uq_reminder"),
                      Index("ix_reminder_created", "created_at"))
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    deadline_id: Mapped[int] = mapped_column(ForeignKey("deadline.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("member.id"), nullable=True)
    offset: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(16))  # "queued" | "skipped"
    reason: Mapped[str] = mapped_column(String(64), default="")
    send_at: Mapped[datetime]
    created_at: Mapped[datetime]
    dedupe_key: Mapped[str | None] = mapped_column(String(160), nullable=True)


class ActionOwner(enum.StrEnum):
    SECRETARIAT = "secretariat"
    TROIKA = "troika"
    CHAIR = "chair"
    MEMBER = "member"
    FOCAL_POINTS = "focal_points"


class ActionPoint(Base):
    """A key action point agreed at a meeting: what, who owns it, by when, and where it stands."""

    __tablename__ = "action_point"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    meeting: Mapped[str] = mapped_column(String(200), default="")
    owner: Mapped[str] = mapped_column(String(16))
    owner_member_id: Mapped[int | None] = mapped_column(ForeignKey("member.id"), nullable=True)
    due_at: Mapped[datetime | None] = mapped_column(nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="open")  # "open" | "done"
    created_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    created_at: Mapped[datetime]
    done_at: Mapped[datetime | None] = mapped_column(nullable=True)
    done_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)

    owner_member: Mapped[Member | None] = relationship(lazy="joined")


class JobRun(Base):
    """A scheduled job's run for one period (the digest of a week): whoever inserts it runs it."""

    __tablename__ = "job_run"
    __table_args__ = (UniqueConstraint("job", "period", name="uq_job_run"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    job: Mapped[str] = mapped_column(String(48))
    period: Mapped[str] = mapped_column(String(32))
    claimed_by: Mapped[str] = mapped_column(String(64), default="")
    claimed_at: Mapped[datetime]
# --- delivery: instance liveness (issue 9) ---
class Instance(Base):
    """A running bot process. It renews `beats` every few seconds and removes its row on a
    clean stop; claims (inbox, outbox) hold only while their instance's row is alive.

    `polls` names what only one process may do at a time (e.g. "telegram:<token hash>").
    """

    __tablename__ = "instance"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    beats: Mapped[int] = mapped_column(BigInteger, default=0)
    polls: Mapped[str] = mapped_column(String(120), default="")


class StoreIdentity(Base):
    """The store's own name, written once at its creation: a running bot notices when the
    database under it was replaced (a deleted SQLite file, another server)."""

    __tablename__ = "store_identity"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    uid: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]
