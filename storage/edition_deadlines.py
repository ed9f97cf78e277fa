"""A newsletter edition's submission deadline as a reminded obligation (issue 12 wiring).

Owed by each member (its focal points first, its alternates from the 2-day reminder on, by the
escalation in handlers/reminders.py) until it has sent something for the edition, as
`storage.editions.has_submitted` decides. `sync_edition_deadline` is called wherever an
edition is created, changes its deadline or its status: a collecting edition has a deadline,
a closed or published one has none any more.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from messages import Renderer
from storage import editions
from storage.deadlines import audience, cancel_deadline, register_obligation, sync_deadline
from storage.models import (
    Deadline,
    DeadlineKind,
    Edition,
    EditionStatus,
    NationalUpdate,
    RoleName,
)

TEXT = Renderer()  # the titles and asks are stored on the deadline, in the default locale


async def sync_edition_deadline(session: AsyncSession, edition: Edition, now: datetime) -> None:
    """The edition's deadline follows it: set or moved while collecting, else cancelled."""
    if edition.status != EditionStatus.COLLECTING:
        await cancel_deadline(session, DeadlineKind.EDITION_SUBMISSION, edition.id, now)
        return
    text = TEXT
    context = {"title": edition.title, "number": edition.number}
    await sync_deadline(
        session, DeadlineKind.EDITION_SUBMISSION, edition.id, edition.submission_deadline,
        text.render("obligations.edition_title", "en", "plain", **context)[:200],
        audience(roles=[RoleName.FOCAL_POINT]), now=now,
        asks=text.render("obligations.edition_asks", "en", "plain", **context),
        created_by=edition.created_by)


async def _owes(session: AsyncSession, deadline: Deadline, member_id: int | None,
                person_id: int | None) -> bool:
    """A member owes its contribution until it has submitted; no person owes it alone."""
    if member_id is None or deadline.ref_id is None:
        return False
    return not await editions.has_submitted(session, deadline.ref_id, member_id)


async def _done(session: AsyncSession, deadlines: Sequence[Deadline]) -> dict[int, set[int]]:
    """The members that have submitted to each edition, in one query (the digest's list)."""
    found: dict[int, set[int]] = {d.id: set() for d in deadlines}
    by_edition = {d.ref_id: d.id for d in deadlines if d.ref_id is not None}
    if not by_edition:
        return found
    in_it = NationalUpdate.edition_id == Edition.id
    waiting = (NationalUpdate.status.in_([s.value for s in editions.PENDING])
               & (NationalUpdate.submitted_at <= Edition.submission_deadline))
    rows = await session.execute(
        select(Edition.id, NationalUpdate.member_id).distinct()
        .join(NationalUpdate, (in_it & NationalUpdate.status.in_(
            [s.value for s in editions.IN_EDITION])) | waiting)
        .where(Edition.id.in_(list(by_edition)), NationalUpdate.member_id.is_not(None)))
    for edition_id, member_id in rows:
        if member_id is not None:
            found[by_edition[edition_id]].add(member_id)
    return found


async def _owing(session: AsyncSession, deadline: Deadline, member_ids: Collection[int],
                 person_ids: Collection[int]) -> tuple[set[int], set[int]]:
    """The members that have not submitted, in one query; no person owes it alone."""
    if deadline.ref_id is None:
        return set(), set()
    return set(member_ids) - (await _done(session, [deadline]))[deadline.id], set()


register_obligation(DeadlineKind.EDITION_SUBMISSION, _owes, _done, _owing)
