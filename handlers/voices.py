"""Civil society voices: partners in a consultative role file newsletter items for their organisation.

A voice is an update with no member: it is attributed to the organisation the partner names
(their roster organisation by default), reviewed like any update and goes in the newsletter's
civil society section.
"""

from __future__ import annotations

from typing import Any

from handlers import forms
from handlers.context import Context
from handlers.forms import Field, Form
from handlers.types import Choice, Incoming, Outgoing, UserError
from handlers.updates import (
    MAX_BODY,
    MAX_TITLE,
    _check_links,
    _revision,
    _save_edit,
    _visibility_choices,
    summary,
)
from storage.models import NationalUpdate, RoleName, UpdateCategory, UpdateStatus


def is_civil_society(ctx: Context) -> bool:
    return any(r.role == RoleName.CIVIL_SOCIETY for r in ctx.roles)


async def start_voice(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Open the civil society voice form, the organisation filled in from the roster."""
    if not is_civil_society(ctx):
        raise UserError("newsletter.voice_only")
    assert ctx.person is not None
    answers: dict[str, Any] = {"organisation": ctx.person.ministry or ""}
    return [await forms.start(ctx, VOICE_FORM, answers)]


async def edit_voice(row: NationalUpdate, ctx: Context) -> list[Outgoing]:
    """Open one's voice for editing, each answer shown as it stands."""
    answers = {
        "update_id": row.id, "version": row.version, "organisation": row.organisation,
        "category": UpdateCategory.CIVIL_SOCIETY.value, "title": row.title, "text": row.body,
        "links": "\n".join(row.links), "visibility": row.visibility, "files": [],
    }
    return [Outgoing("updates.editing", {"id": row.id, "title": row.title}),
            await forms.start(ctx, VOICE_FORM, answers)]


async def _submit(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    if answers.get("update_id"):
        answers = {**answers, "category": UpdateCategory.CIVIL_SOCIETY.value}
        replies = await _save_edit(ctx, answers)
        row = await ctx.session.get(NationalUpdate, int(answers["update_id"]))
        if row is not None and row.organisation != answers["organisation"]:
            row.organisation = answers["organisation"]
            await ctx.session.flush()
        return replies
    if not is_civil_society(ctx):
        raise UserError("newsletter.voice_only")
    assert ctx.person is not None
    row = NationalUpdate(
        member_id=None, organisation=answers["organisation"], author_id=ctx.person.id,
        category=UpdateCategory.CIVIL_SOCIETY, title=answers["title"], body=answers["text"],
        links=[u for u in (answers.get("links") or "").split() if u],
        visibility=answers["visibility"], status=UpdateStatus.SUBMITTED,
        created_at=ctx.now, submitted_at=ctx.now,
    )
    ctx.session.add(row)
    await ctx.session.flush()
    ctx.session.add(_revision(row, ctx))
    await ctx.session.flush()
    await ctx.session.refresh(row, ["attachments", "member", "author"])
    await ctx.audit("update.filed", f"update:{row.id}", organisation=row.organisation,
                    visibility=row.visibility)
    await ctx.notify_secretariat(Outgoing(
        "updates.for_review", summary(row, ctx),
        choices=(Choice("/review", ctx.label("updates.review_button")),), private=True))
    return [Outgoing("newsletter.voice_filed", {"id": row.id, "title": row.title,
                                                "organisation": row.organisation},
                     closes_form=True,
                     choices=(Choice("/myupdates", ctx.label("updates.mine_button")),))]


VOICE_FORM = Form(
    name="voice",
    title="newsletter.voice_form_title",
    fields=(
        Field("organisation", "newsletter.voice_ask_organisation", max_length=200),
        Field("title", "newsletter.voice_ask_title", max_length=MAX_TITLE,
              hint="updates.ask_title_hint"),
        Field("text", "newsletter.voice_ask_text", kind="multiline", max_length=MAX_BODY),
        Field("links", "updates.ask_links", required=False, max_length=1500,
              validate=_check_links, hint="updates.ask_links_hint"),
        Field("visibility", "updates.ask_visibility", kind="choice",
              choices=_visibility_choices, hint="updates.ask_visibility_hint"),
    ),
    submit=_submit,
    submit_label="updates.form_submit",
)
