"""National updates: filing one in under a minute, editing or withdrawing it, seeing one's own."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import or_, select, update

from handlers import forms
from handlers.context import Context
from handlers.forms import Field, Form
from handlers.network import find_member, member_by_code
from handlers.types import MAX_TEXT, Choice, Incoming, Outgoing, UserError
from storage.models import (
    Member,
    NationalUpdate,
    UpdateAttachment,
    UpdateCategory,
    UpdateRevision,
    UpdateStatus,
    Visibility,
)

MAX_TITLE = 150
MAX_BODY = MAX_TEXT  # the update is a message: one limit for both, said in one sentence
MAX_LINKS = 5
EDITABLE = frozenset({UpdateStatus.SUBMITTED, UpdateStatus.CHANGES_REQUESTED,
                      UpdateStatus.APPROVED})
URL = re.compile(r"^https://[^\s/$.?#|<>][^\s|<>]*$", re.IGNORECASE)
LINKISH = re.compile(r"^[a-z][a-z0-9+.-]*://\S", re.IGNORECASE)


async def _member_choices(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice(m.code, m.name) for m in ctx.own_members()]


async def _category_choices(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice(c.value, ctx.label(f"updates.category_{c.value}")) for c in UpdateCategory]


async def _visibility_choices(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice(v.value, ctx.label(f"updates.visibility_{v.value}")) for v in Visibility]


async def _check_links(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    """Links separated by spaces or new lines, each https://; what is wrong is quoted whole.

    A word that does not start like an address belongs to the text around it: "not a link"
    is quoted as typed, not as its first word.
    """
    for line in value.splitlines():
        words = line.split()
        for n, word in enumerate(words):
            if URL.match(word):
                continue
            if word.lower().startswith("http://") and URL.match("https://" + word[7:]):
                raise UserError("forms.http_url", address=word)
            if LINKISH.match(word):
                raise UserError("updates.bad_link", address=word)
            end = n
            while end < len(words) and not LINKISH.match(words[end]):
                end += 1
            raise UserError("updates.bad_link", address=" ".join(words[n:end]))
    links = value.split()
    if len(links) > MAX_LINKS:
        raise UserError("updates.too_many_links", limit=MAX_LINKS)
    return "\n".join(links)


async def _submit(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    if answers.get("update_id"):
        return await _save_edit(ctx, answers)
    return await _file(ctx, answers)


UPDATE_FORM = Form(
    name="update",
    title="updates.form_title",
    fields=(
        Field("member", "updates.ask_member", kind="choice", choices=_member_choices),
        Field("category", "updates.ask_category", kind="choice", choices=_category_choices),
        Field("title", "updates.ask_title", max_length=MAX_TITLE,
              hint="updates.ask_title_hint"),
        Field("text", "updates.ask_text", kind="multiline", max_length=MAX_BODY),
        Field("links", "updates.ask_links", required=False, max_length=1500,
              validate=_check_links, hint="updates.ask_links_hint"),
        Field("files", "updates.ask_files", kind="files", required=False),
        Field("visibility", "updates.ask_visibility", kind="choice",
              choices=_visibility_choices, hint="updates.ask_visibility_hint"),
    ),
    submit=_submit,
    submit_label="updates.form_submit",
)


def _acting_members(ctx: Context) -> list[Member]:
    members = ctx.own_members()
    if not members and not ctx.is_secretariat:
        raise UserError("updates.members_only")
    return members


async def start_update(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Open the update form; the member is the caller's own unless they serve several."""
    from handlers import voices  # civil society partners file a voice instead (issue 11)

    if not ctx.own_members() and not ctx.is_secretariat and voices.is_civil_society(ctx):
        return await voices.start_voice(msg, ctx)
    members = _acting_members(ctx)
    answers: dict[str, Any] = {}
    if msg.args:
        member = await find_member(ctx.session, msg.args)
        if member is None:
            raise UserError("forms.unknown_member", text=msg.args)
        if not ctx.may_act_for(member):
            raise UserError("updates.not_your_member", member=member.name)
        answers["member"] = member.code
    elif len(members) == 1:
        answers["member"] = members[0].code
    elif not members:
        raise UserError("updates.which_member")
    given = ("member",) if "member" in answers else ()
    return [await forms.start(ctx, UPDATE_FORM, answers, given=given)]


async def offer(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Free text in a private chat: offer to file it as an update rather than lose it."""
    members = ctx.own_members()
    if not members or not msg.private:
        return [Outgoing("errors.free_text")]
    text = msg.text.strip()  # never over MAX_BODY: the dispatcher refuses longer messages
    answers: dict[str, Any] = {"text": text}
    given: tuple[str, ...] = ("text",)
    if len(members) == 1:
        answers["member"] = members[0].code
        given = ("member", "text")
    lead = ctx.label("updates.offer", members=[m.name for m in members])
    return [await forms.start(ctx, UPDATE_FORM, answers, given=given, lead=lead)]


def _attachments(update_row: NationalUpdate, files: list[dict[str, Any]]) -> list[UpdateAttachment]:
    return [UpdateAttachment(update_id=update_row.id, platform=f["platform"], file_id=f["file_id"],
                             name=f["name"][:255], size=int(f["size"]), mime_type=f["mime_type"])
            for f in files]


def _revision(row: NationalUpdate, ctx: Context) -> UpdateRevision:
    assert ctx.person is not None
    return UpdateRevision(update_id=row.id, version=row.version, category=row.category,
                          title=row.title, body=row.body, links=list(row.links),
                          visibility=row.visibility, edited_by=ctx.person.id, edited_at=ctx.now)


def summary(row: NationalUpdate, ctx: Context) -> dict[str, Any]:
    """What a message shows of an update."""
    return {
        "id": row.id, "title": row.title, "body": row.body, "member": row.source,
        "author": row.author.name, "category": ctx.label(f"updates.category_{row.category}"),
        "visibility": ctx.label(f"updates.visibility_{row.visibility}"),
        "status": ctx.label(f"updates.status_{row.status}"), "status_code": row.status,
        "links": list(row.links), "files": [a.name for a in row.attachments],
        "submitted": row.submitted_at, "version": row.version, "note": row.review_note,
        "section": ctx.label(f"review.section_{row.section}") if row.section else "",
    }


async def _file(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    assert ctx.person is not None
    member = await member_by_code(ctx.session, answers["member"])
    if not ctx.may_act_for(member):
        raise UserError("updates.not_your_member", member=member.name)
    row = NationalUpdate(
        member_id=member.id, author_id=ctx.person.id, category=answers["category"],
        title=answers["title"], body=answers["text"],
        links=[u for u in (answers.get("links") or "").split() if u],
        visibility=answers["visibility"], status=UpdateStatus.SUBMITTED,
        created_at=ctx.now, submitted_at=ctx.now,
    )
    ctx.session.add(row)
    await ctx.session.flush()
    ctx.session.add(_revision(row, ctx))
    ctx.session.add_all(_attachments(row, answers.get("files") or []))
    await ctx.session.flush()
    await ctx.session.refresh(row, ["attachments", "member", "author"])
    await ctx.audit("update.filed", f"update:{row.id}", member=member.code,
                    visibility=row.visibility)
    await ctx.notify_secretariat(Outgoing(
        "updates.for_review", summary(row, ctx),
        choices=(Choice(f"/review {row.id}", ctx.label("updates.review_button")),),
        private=True))
    choices = [Choice("/myupdates", ctx.label("updates.mine_button"))]
    if row.category == UpdateCategory.NAP_PROGRESS:
        choices.insert(0, Choice(f"/nap update {member.code}",
                                 ctx.label("updates.nap_button", member=member.name)))
    return [Outgoing("updates.filed", {**summary(row, ctx),
                                       "nap_offer": row.category == UpdateCategory.NAP_PROGRESS},
                     closes_form=True, choices=tuple(choices))]


async def _own_update(ctx: Context, number: str, command: str = "edit") -> NationalUpdate:
    """An update the caller may change: their own, or any for the secretariat.

    `command` is the one used, for the example a missing or wrong number gets.
    """
    if not number.strip().lstrip("#").isdigit():
        raise UserError("updates.which_update", command=command)
    row = await ctx.session.get(NationalUpdate, int(number.strip().lstrip("#")))
    if row is None:
        raise UserError("updates.unknown", id=number)
    assert ctx.person is not None
    if row.author_id != ctx.person.id and not ctx.is_secretariat:
        raise UserError("updates.not_yours", id=row.id)
    if row.status not in EDITABLE:
        raise UserError("updates.not_editable", id=row.id,
                        status=ctx.label(f"updates.status_{row.status}"))
    return row


async def edit(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Open one's update for editing, each answer shown as it stands."""
    row = await _own_update(ctx, msg.args)
    if row.member is None:  # a civil society voice (issue 11)
        from handlers import voices

        return await voices.edit_voice(row, ctx)
    answers = {
        "update_id": row.id, "version": row.version, "member": row.member.code,
        "category": row.category, "title": row.title, "text": row.body,
        "links": "\n".join(row.links), "visibility": row.visibility,
        "files": [{"platform": a.platform, "file_id": a.file_id, "name": a.name,
                   "size": a.size, "mime_type": a.mime_type} for a in row.attachments],
    }
    return [Outgoing("updates.editing", {"id": row.id, "title": row.title}),
            await forms.start(ctx, UPDATE_FORM, answers, given=("member",))]


async def _save_edit(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    row = await _own_update(ctx, str(answers["update_id"]))
    links = [u for u in (answers.get("links") or "").split() if u]
    result = await ctx.session.execute(
        update(NationalUpdate)
        .where(NationalUpdate.id == row.id, NationalUpdate.version == answers["version"],
               NationalUpdate.status.in_(list(EDITABLE)))
        .values(category=answers["category"], title=answers["title"], body=answers["text"],
                links=links, visibility=answers["visibility"], status=UpdateStatus.SUBMITTED,
                version=NationalUpdate.version + 1, submitted_at=ctx.now, section="",
                decided_at=None, decided_by=None)
    )
    if not getattr(result, "rowcount", 0):
        raise UserError("updates.changed_meanwhile", id=row.id)
    await ctx.session.refresh(row)
    ctx.session.add(_revision(row, ctx))
    known = {a.file_id for a in row.attachments}
    new_files = [f for f in answers.get("files") or [] if f["file_id"] not in known]
    ctx.session.add_all(_attachments(row, new_files))
    await ctx.session.flush()
    await ctx.session.refresh(row, ["attachments"])
    await ctx.audit("update.edited", f"update:{row.id}", version=row.version)
    await ctx.notify_secretariat(Outgoing(
        "updates.revised_for_review", summary(row, ctx),
        choices=(Choice(f"/review {row.id}", ctx.label("updates.review_button")),),
        private=True))
    return [Outgoing("updates.edited", summary(row, ctx), closes_form=True)]


async def withdraw(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Withdraw one's update, once asked and confirmed; it leaves the review queue and the
    newsletter.

    `/withdraw 12` asks, naming the update; its Withdraw button sends `/withdraw 12v3`, the
    update as it was shown (a version changed since is asked about again), Keep it sends
    `/withdraw 12 keep`.
    """
    number, _, answer = msg.args.partition(" ")
    number, _, seen = number.lstrip("#").partition("v")
    if seen and not seen.isdigit():
        raise UserError("updates.which_update", command="withdraw")
    row = await _own_update(ctx, number, "withdraw")
    if answer.strip().lower() == "keep":
        return [Outgoing("updates.kept", {"id": row.id, "title": row.title})]
    if not seen or int(seen) != row.version:
        return [Outgoing(
            "updates.confirm_withdraw",
            {**summary(row, ctx), "changed": bool(seen)},
            choices=(Choice(f"/withdraw {row.id}v{row.version}",
                            ctx.label("updates.withdraw_confirm_button")),
                     Choice(f"/withdraw {row.id} keep", ctx.label("updates.keep_button"))),
            private=True)]
    result = await ctx.session.execute(
        update(NationalUpdate)
        .where(NationalUpdate.id == row.id, NationalUpdate.version == row.version,
               NationalUpdate.status.in_(list(EDITABLE)))
        .values(status=UpdateStatus.WITHDRAWN, decided_at=ctx.now,
                version=NationalUpdate.version + 1)
    )
    if not getattr(result, "rowcount", 0):
        raise UserError("updates.changed_meanwhile", id=row.id)
    await ctx.audit("update.withdrawn", f"update:{row.id}")
    return [Outgoing("updates.withdrawn", {"id": row.id, "title": row.title})]


async def mine(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """List the caller's updates (and their members') with their status, or show one in full."""
    assert ctx.person is not None
    if msg.args:
        return await _show(ctx, msg.args)
    member_ids = [m.id for m in ctx.own_members()]
    rows = list(await ctx.session.scalars(
        select(NationalUpdate)
        .where(or_(NationalUpdate.author_id == ctx.person.id,
                   NationalUpdate.member_id.in_(member_ids)))
        .order_by(NationalUpdate.submitted_at.desc(), NationalUpdate.id.desc())
        .limit(20)
    ))
    choices = tuple(
        c for row in rows if row.status in EDITABLE and row.author_id == ctx.person.id
        for c in (Choice(f"/edit {row.id}", ctx.label("updates.edit_button", id=row.id)),
                  Choice(f"/withdraw {row.id}", ctx.label("updates.withdraw_button", id=row.id)))
    )[:10]
    return [Outgoing("updates.mine", {"updates": [summary(r, ctx) for r in rows]},
                     choices=choices, private=True)]


async def _show(ctx: Context, number: str) -> list[Outgoing]:
    assert ctx.person is not None
    if not number.strip().lstrip("#").isdigit():
        raise UserError("updates.which_update", command="myupdates")
    row = await ctx.session.get(NationalUpdate, int(number.strip().lstrip("#")))
    own = {m.id for m in ctx.own_members()}
    if row is None or not (row.author_id == ctx.person.id or row.member_id in own
                           or ctx.is_secretariat):
        raise UserError("updates.unknown", id=number)
    revisions = list(await ctx.session.scalars(
        select(UpdateRevision).where(UpdateRevision.update_id == row.id)
        .order_by(UpdateRevision.version)
    ))
    return [Outgoing("updates.detail", {
        **summary(row, ctx),
        "history": [{"version": r.version, "at": r.edited_at, "title": r.title}
                    for r in revisions],
    }, private=True)]
