"""Review by the secretariat: approve (into a newsletter section), request changes, or reject.

Each decision is one conditional UPDATE on an update still in review: when two officers act on
the same update at once, one wins and the other is told who decided first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from handlers import forms
from handlers.context import Context
from handlers.forms import Field, Form
from handlers.newsletter_draft import SECTIONS  # one list, in the newsletter's order
from handlers.types import Choice, Incoming, Outgoing, UserError
from handlers.updates import summary
from storage import editions
from storage.models import (
    Edition,
    EditionStatus,
    NationalUpdate,
    Person,
    UpdateCategory,
    UpdateStatus,
)

DEFAULT_SECTION = {
    UpdateCategory.NAP_PROGRESS: "nap_progress",
    UpdateCategory.POLICY: "innovation",
    UpdateCategory.BEST_PRACTICE: "lessons",
    UpdateCategory.EVENT: "events",
    UpdateCategory.KNOWLEDGE_PRODUCT: "knowledge",
    UpdateCategory.FUNDING: "funding",
    UpdateCategory.CIVIL_SOCIETY: "civil_society",
}
VERBS = ("approve", "changes", "reject", "sections")


async def _next_in_queue(ctx: Context) -> tuple[NationalUpdate | None, int]:
    """The oldest update waiting for review, and how many wait (both by ix_update_status)."""
    waiting = NationalUpdate.status == UpdateStatus.SUBMITTED
    count = int(await ctx.session.scalar(
        select(func.count()).select_from(NationalUpdate).where(waiting)) or 0)
    if not count:
        return None, 0
    oldest = await ctx.session.scalar(
        select(NationalUpdate).where(waiting)
        .order_by(NationalUpdate.submitted_at, NationalUpdate.id).limit(1))
    return oldest, count


def _buttons(ctx: Context, row: NationalUpdate) -> tuple[Choice, ...]:
    section = DEFAULT_SECTION.get(UpdateCategory(row.category), "member_action")
    ref = f"{row.id}v{row.version}"
    return (
        Choice(f"/review approve {ref} {section}",
               ctx.label("review.approve_button", section=ctx.label(f"review.section_{section}"))),
        Choice(f"/review sections {ref}", ctx.label("review.sections_button")),
        Choice(f"/review changes {ref}", ctx.label("review.changes_button")),
        Choice(f"/review reject {ref}", ctx.label("review.reject_button")),
    )


def _item(ctx: Context, row: NationalUpdate, waiting: int) -> Outgoing:
    return Outgoing("review.item", {**summary(row, ctx), "waiting": waiting},
                    choices=_buttons(ctx, row), private=True)


async def _not_in_review(ctx: Context, row: NationalUpdate) -> UserError:
    """Why nothing can be decided on `row` any more: what it is now, and who decided."""
    if row.status == UpdateStatus.SUBMITTED:  # still waiting: it was revised meanwhile
        return UserError("review.revised_meanwhile", id=row.id)
    decider = await ctx.session.get(Person, row.decided_by) if row.decided_by else None
    return UserError("review.not_in_review", id=row.id,
                     status=ctx.label(f"updates.status_{row.status}"),
                     state=ctx.label(f"review.state_{row.status}"),
                     by=decider.name if decider else "")


async def _show(ctx: Context, row: NationalUpdate) -> list[Outgoing]:
    """One update for review (a notice's Review button): itself if it still waits, else why not."""
    _, waiting = await _next_in_queue(ctx)
    if row.status == UpdateStatus.SUBMITTED:
        return [_item(ctx, row, waiting)]
    return [Outgoing("review.no_longer_waiting",
                     {"id": row.id, "title": row.title,
                      "status": ctx.label(f"updates.status_{row.status}"),
                      "state": ctx.label(f"review.state_{row.status}"), "waiting": waiting},
                     choices=(Choice("/review", ctx.label("review.next_button")),)
                     if waiting else ())]


async def review(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Show the oldest update waiting for review (or one by its number), or act on one:
    approve, changes, reject."""
    verb, _, rest = msg.args.partition(" ")
    verb = verb.lower()
    if not verb:
        row, waiting = await _next_in_queue(ctx)
        if row is None:
            return [Outgoing("review.queue_empty")]
        return [_item(ctx, row, waiting)]
    if verb.lstrip("#").isdigit() and not rest.strip():
        shown = await ctx.session.get(NationalUpdate, int(verb.lstrip("#")))
        if shown is None:
            raise UserError("updates.unknown", id=verb.lstrip("#"))
        return await _show(ctx, shown)
    number, _, text = rest.strip().partition(" ")
    number, _, seen = number.lstrip("#").partition("v")  # "12v2": update 12 as seen at version 2
    if verb not in VERBS or not number.isdigit() or (seen and not seen.isdigit()):
        raise UserError("review.usage")
    update_id = int(number)
    row = await ctx.session.get(NationalUpdate, update_id)
    if row is None:
        raise UserError("updates.unknown", id=update_id)
    if seen and int(seen) != row.version and row.status == UpdateStatus.SUBMITTED:
        return [Outgoing("review.revised_meanwhile", {"id": row.id}), _item(ctx, row, 0)]
    if row.status != UpdateStatus.SUBMITTED:  # say so now, not after a comment is written
        raise await _not_in_review(ctx, row)
    text = text.strip()
    if verb == "sections":
        return [Outgoing("review.pick_section", {"id": row.id, "title": row.title},
                         choices=tuple(Choice(f"/review approve {row.id}v{row.version} {s}",
                                              ctx.label(f"review.section_{s}"))
                                       for s in SECTIONS))]
    if verb == "approve":
        text, edition_id = await _edition_choice(ctx, text)
        section = text or DEFAULT_SECTION.get(UpdateCategory(row.category), "member_action")
        if section not in SECTIONS:
            raise UserError("review.unknown_section", section=section,
                            sections=", ".join(SECTIONS))
        return await _decide(ctx, row, UpdateStatus.APPROVED, section=section,
                             edition_id=edition_id)
    if not text:  # a comment or reason is needed: ask for it as a one-step form
        return [await forms.start(ctx, NOTE_FORM, {"update_id": row.id, "verb": verb,
                                                   "version": row.version})]
    status = UpdateStatus.CHANGES_REQUESTED if verb == "changes" else UpdateStatus.REJECTED
    return await _decide(ctx, row, status, note=text)


async def _edition_choice(ctx: Context, text: str) -> tuple[str, int | None]:
    """Split `edition:N` off an approval; without it, the edition collecting now (issue 11)."""
    words = text.split()
    chosen = [w for w in words if w.lower().startswith("edition:")]
    rest = " ".join(w for w in words if w not in chosen)
    if chosen:
        number = chosen[-1].split(":", 1)[1].lstrip("#")
        found = await editions.by_number(ctx.session, int(number)) if number.isdigit() else None
        if found is None:
            raise UserError("newsletter.unknown_edition", number=number)
        if found.status == EditionStatus.PUBLISHED:
            raise UserError("newsletter.frozen", number=found.number)
        return rest, found.id
    found = await editions.collecting(ctx.session)
    return rest, found.id if found else None


async def _decide(ctx: Context, row: NationalUpdate, status: UpdateStatus, *,
                  section: str = "", note: str = "",
                  edition_id: int | None = None) -> list[Outgoing]:
    assert ctx.person is not None
    placed = {"edition_id": edition_id} if status == UpdateStatus.APPROVED else {}
    result = await ctx.session.execute(
        update(NationalUpdate)
        .where(NationalUpdate.id == row.id, NationalUpdate.status == UpdateStatus.SUBMITTED,
               NationalUpdate.version == row.version)
        .values(status=status, section=section, review_note=note, decided_at=ctx.now,
                decided_by=ctx.person.id, **placed)
    )
    if not getattr(result, "rowcount", 0):
        await ctx.session.refresh(row)
        raise await _not_in_review(ctx, row)
    await ctx.session.refresh(row)
    await ctx.audit(f"update.{status.value}", f"update:{row.id}", section=section, note=note)
    details: dict[str, Any] = summary(row, ctx)
    placed_in = await ctx.session.get(Edition, row.edition_id) if row.edition_id else None
    details["edition"] = placed_in.number if placed_in and status == UpdateStatus.APPROVED else None
    author = await ctx.session.get(Person, row.author_id)
    assert author is not None
    edit = (Choice(f"/edit {row.id}", ctx.label("updates.edit_button", id=row.id)),)
    await ctx.notify(Outgoing(f"review.told_{status.value}", details,
                              choices=edit if status == UpdateStatus.CHANGES_REQUESTED else ()),
                     person=author)
    _, waiting = await _next_in_queue(ctx)
    return [Outgoing(f"review.done_{status.value}", {**details, "waiting": waiting},
                     choices=(Choice("/review", ctx.label("review.next_button")),)
                     if waiting else ())]


async def _submit_note(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    if not ctx.is_secretariat:
        raise UserError("errors.secretariat_only", command="review")
    row = await ctx.session.get(NationalUpdate, int(answers["update_id"]))
    if row is None:
        raise UserError("updates.unknown", id=answers["update_id"])
    revised = row.version != answers.get("version", row.version)
    if revised and row.status == UpdateStatus.SUBMITTED:
        raise UserError("review.revised_meanwhile", id=row.id)
    status = (UpdateStatus.CHANGES_REQUESTED if answers["verb"] == "changes"
              else UpdateStatus.REJECTED)
    return await _decide(ctx, row, status, note=answers["note"])


NOTE_FORM = Form(
    name="review_note",
    title="review.note_title",
    fields=(Field("note", "review.ask_note", kind="multiline", max_length=1000),),
    submit=_submit_note,
)
