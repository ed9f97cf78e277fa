"""Newsletter editions (secretariat): collect approved updates, compile drafts, publish.

`/edition new|N|N move|N drop|N add|N spotlight|N close|N publish`, `/editions`, and
`/newsletter [N] [html|md|docx|preview|archive]`. The draft itself is built in
`handlers.newsletter_draft`; the preview page of `fpbot serve` checks the signed link made here.
"""

from __future__ import annotations

import hmac
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import update

from handlers import forms
from handlers.context import Context
from handlers.forms import Field, Form
from handlers.network import find_member
from handlers.newsletter_draft import FORMATS, SECTIONS, compile_draft, render
from handlers.types import Choice, Incoming, OutFile, Outgoing, UserError
from storage import editions as store
from storage.edition_deadlines import sync_edition_deadline
from storage.models import (
    Edition,
    EditionStatus,
    NationalUpdate,
    Person,
    UpdateStatus,
    Visibility,
)

LANGUAGES = ("en", "fr", "es")
PREVIEW_SALT = "fpbot.newsletter-preview"


# -- /editions and /edition -------------------------------------------------------------------
async def list_editions(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """List every edition with its status, item count and deadline."""
    rows = await store.all_editions(ctx.session)
    counts = await store.counts(ctx.session, [e.id for e in rows])
    network = await store.counts(ctx.session, [e.id for e in rows], network=True)
    return [Outgoing("newsletter.editions", {"editions": [
        {"number": e.number, "title": e.title, "count": counts.get(e.id, 0),
         "network": network.get(e.id, 0),
         "status": ctx.label(f"newsletter.status_{e.status}"),
         "deadline": _local_day(ctx, e.submission_deadline), "published": e.published_at}
        for e in rows]}, choices=(Choice("/edition new", ctx.label("newsletter.form_title")),))]


async def edition(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Start an edition, show one by section, or change it: move, drop, spotlight, publish."""
    words = msg.args.split()
    if not words:
        return await list_editions(msg, ctx)
    if words[0].lower() == "new":
        return [await forms.start(ctx, EDITION_FORM, {"language": "en"})]
    found = await _edition(ctx, words[0])
    verb = words[1].lower() if len(words) > 1 else ""
    rest = words[2:]
    if not verb:
        return [await _show(ctx, found)]
    if found.status == EditionStatus.PUBLISHED:
        raise UserError("newsletter.frozen", number=found.number)
    if verb == "move" and len(rest) == 2:
        return await _move(ctx, found, rest[0], rest[1])
    if verb == "drop" and len(rest) == 1:
        row = await _item_in(ctx, found, rest[0])
        await store.assign(ctx.session, row.id, None)
        await ctx.audit("edition.dropped", f"update:{row.id}", edition=found.number)
        return [Outgoing("newsletter.dropped", {"id": row.id, "number": found.number})]
    if verb == "add" and len(rest) in (1, 2):
        return await _add(ctx, found, rest[0], rest[1] if len(rest) == 2 else "")
    if verb == "spotlight" and rest:
        member = await find_member(ctx.session, " ".join(rest))
        if member is None:
            raise UserError("forms.unknown_member", text=" ".join(rest))
        assert ctx.person is not None
        await store.choose_spotlight(ctx.session, found.id, member.id, now=ctx.now,
                                     by=ctx.person.id)
        await ctx.audit("edition.spotlight", f"edition:{found.number}", member=member.code)
        return [Outgoing("newsletter.spotlight_set", {"number": found.number,
                                                      "member": member.name})]
    if verb == "close" and not rest:
        return await _close(ctx, found)
    if verb == "publish" and not rest:
        return await _publish(ctx, found)
    raise UserError("newsletter.edition_usage")


async def _edition(ctx: Context, text: str) -> Edition:
    number = text.lstrip("#")
    if not number.isdigit():
        raise UserError("newsletter.edition_usage")
    found = await store.by_number(ctx.session, int(number))
    if found is None:
        raise UserError("newsletter.unknown_edition", number=number)
    return found


async def _show(ctx: Context, found: Edition) -> Outgoing:
    rows = await store.items(ctx.session, found.id, public=False)
    spotlight = await store.spotlight_of(ctx.session, found.id)
    sections = []
    for key in SECTIONS:
        in_section = [r for r in rows if (r.section if r.section in SECTIONS
                                          else "member_action") == key]
        if in_section:
            sections.append({"heading": ctx.label(f"newsletter.heading_{key}"),
                             "count": len(in_section),
                             "entries": [{"id": r.id, "title": r.title, "source": r.source,
                                        "network_only": r.visibility == Visibility.NETWORK,
                                        "chatham": r.visibility == Visibility.CHATHAM}
                                       for r in in_section]})
    frozen = found.status == EditionStatus.PUBLISHED
    choices = [Choice(f"/newsletter {found.number} {fmt}", ctx.label(f"newsletter.format_{fmt}"))
               for fmt in FORMATS]
    if not frozen:
        choices.append(Choice(f"/newsletter {found.number} preview",
                              ctx.label("newsletter.preview_button")))
    return Outgoing("newsletter.edition", {
        "number": found.number, "title": found.title,
        "status": ctx.label(f"newsletter.status_{found.status}"),
        "start": found.period_start, "end": found.period_end,
        "deadline": _local_day(ctx, found.submission_deadline),
        "publication": found.planned_publication,
        "spotlight": spotlight.member.name if spotlight else "",
        "spotlight_chosen": spotlight is not None, "sections": sections, "frozen": frozen,
        "count": sum(r.visibility != Visibility.NETWORK for r in rows),
        "network": sum(r.visibility == Visibility.NETWORK for r in rows),
    }, choices=tuple(choices))


async def _item_in(ctx: Context, found: Edition, text: str) -> NationalUpdate:
    number = text.lstrip("#")
    row = await ctx.session.get(NationalUpdate, int(number)) if number.isdigit() else None
    if row is None or row.edition_id != found.id:
        raise UserError("newsletter.not_in_edition", id=number, number=found.number)
    if row.status == UpdateStatus.PUBLISHED:
        raise UserError("newsletter.frozen", number=found.number)
    return row


async def _move(ctx: Context, found: Edition, item: str, where: str) -> list[Outgoing]:
    row = await _item_in(ctx, found, item)
    if where.lower().startswith("edition:"):
        target = await _edition(ctx, where.split(":", 1)[1])
        if target.status == EditionStatus.PUBLISHED:
            raise UserError("newsletter.frozen", number=target.number)
        await store.assign(ctx.session, row.id, target.id)
        await ctx.audit("edition.moved", f"update:{row.id}", edition=target.number)
        return [Outgoing("newsletter.moved_edition",
                         {"id": row.id, "number": found.number, "to": target.number})]
    section = _section(where)
    await store.set_section(ctx.session, row.id, section)
    await ctx.audit("edition.section", f"update:{row.id}", section=section)
    return [Outgoing("newsletter.moved_section", {
        "id": row.id, "number": found.number,
        "section": ctx.label(f"newsletter.heading_{section}")})]


async def _add(ctx: Context, found: Edition, item: str, section: str) -> list[Outgoing]:
    number = item.lstrip("#")
    row = await ctx.session.get(NationalUpdate, int(number)) if number.isdigit() else None
    if row is None:
        raise UserError("updates.unknown", id=number)
    if row.status != UpdateStatus.APPROVED:
        raise UserError("newsletter.not_approved", id=row.id,
                        status=ctx.label(f"updates.status_{row.status}"))
    await store.assign(ctx.session, row.id, found.id)
    if section:
        await store.set_section(ctx.session, row.id, _section(section))
    await ctx.session.refresh(row)
    await ctx.audit("edition.added", f"update:{row.id}", edition=found.number)
    key = row.section if row.section in SECTIONS else "member_action"
    return [Outgoing("newsletter.added", {"id": row.id, "number": found.number,
                                          "section": ctx.label(f"newsletter.heading_{key}")})]


def _section(text: str) -> str:
    if text not in SECTIONS:
        raise UserError("newsletter.unknown_section", section=text, sections=", ".join(SECTIONS))
    return text


async def _close(ctx: Context, found: Edition) -> list[Outgoing]:
    found.status = EditionStatus.DRAFTING
    await ctx.session.flush()
    await sync_edition_deadline(ctx.session, found, ctx.now)
    await ctx.audit("edition.closed", f"edition:{found.number}")
    after = await store.collecting(ctx.session)
    return [Outgoing("newsletter.closed", {"number": found.number,
                                           "next": after.number if after else None})]


async def _publish(ctx: Context, found: Edition) -> list[Outgoing]:
    """Freeze the edition, keep its final draft, record the spotlight, tell the authors."""
    assert ctx.person is not None
    draft = await compile_draft(ctx.session, found, ctx.renderer, now=ctx.now, by=ctx.person.id)
    if not draft.items:
        raise UserError("newsletter.publish_empty", number=found.number)
    record = await store.latest_draft(ctx.session, found.id)
    assert record is not None
    record.final, record.html = True, render(draft, "html").decode("utf-8")
    ids = [i.update_id for i in draft.items]
    await ctx.session.execute(
        update(NationalUpdate)
        .where(NationalUpdate.id.in_(ids), NationalUpdate.status == UpdateStatus.APPROVED)
        .values(status=UpdateStatus.PUBLISHED, published_at=ctx.now))
    if record.spotlight_member_id is not None:
        spot = await store.choose_spotlight(ctx.session, found.id, record.spotlight_member_id,
                                            now=ctx.now, by=ctx.person.id)
        spot.featured_at = ctx.now
    found.status, found.published_at = EditionStatus.PUBLISHED, ctx.now
    await ctx.session.flush()
    await sync_edition_deadline(ctx.session, found, ctx.now)
    told: set[int] = set()
    for item in draft.items:
        row = await ctx.session.get(NationalUpdate, item.update_id)
        assert row is not None
        author = await ctx.session.get(Person, row.author_id)
        if author is None:
            continue
        await ctx.notify(Outgoing("newsletter.told_published", {
            "id": row.id, "title": row.title, "number": found.number,
            "edition_title": found.title}),
            person=author, dedupe_key=f"edition:{found.id}:published:{row.id}")
        told.add(author.id)
    await ctx.audit("edition.published", f"edition:{found.number}", items=ids,
                    draft=record.number)
    return [Outgoing("newsletter.published", {"number": found.number, "count": len(ids),
                                              "told": len(told)})]


# -- the edition form -------------------------------------------------------------------------
async def _languages(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice(code, ctx.label(f"newsletter.language_{code}")) for code in LANGUAGES]


async def _create(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    if not ctx.is_secretariat:
        raise UserError("errors.secretariat_only", command="edition")
    assert ctx.person is not None
    start, end = date.fromisoformat(answers["start"]), date.fromisoformat(answers["end"])
    deadline = date.fromisoformat(answers["deadline"])
    publication = date.fromisoformat(answers["publication"])
    if end < start or publication < deadline:
        raise UserError("newsletter.bad_order")
    created = await store.create(
        ctx.session, title=answers["title"], period_start=start, period_end=end,
        language=answers["language"], submission_deadline=_end_of_day(ctx, deadline),
        planned_publication=publication, now=ctx.now, by=ctx.person.id)
    await sync_edition_deadline(ctx.session, created, ctx.now)
    await ctx.audit("edition.created", f"edition:{created.number}")
    return [Outgoing("newsletter.created", {
        "number": created.number, "title": created.title, "start": start, "end": end,
        "deadline": deadline, "publication": publication}, closes_form=True,
        choices=(Choice(f"/edition {created.number}", ctx.label("newsletter.show_button")),))]


EDITION_FORM = Form(
    name="edition",
    title="newsletter.form_title",
    fields=(
        Field("title", "newsletter.ask_title", max_length=160),
        Field("start", "newsletter.ask_period_start", kind="date"),
        Field("end", "newsletter.ask_period_end", kind="date"),
        Field("deadline", "newsletter.ask_deadline", kind="date"),
        Field("publication", "newsletter.ask_publication", kind="date"),
        Field("language", "newsletter.ask_language", kind="choice", choices=_languages),
    ),
    submit=_create,
    submit_label="newsletter.form_submit",
)


def _zone(ctx: Context) -> ZoneInfo:
    try:
        return ZoneInfo(ctx.config.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _end_of_day(ctx: Context, day: date) -> datetime:
    """The deadline: the end of that day in the Network's time zone, stored in UTC."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=_zone(ctx)).astimezone(UTC)


def _local_day(ctx: Context, at: datetime) -> date:
    return at.astimezone(_zone(ctx)).date()


# -- /newsletter ------------------------------------------------------------------------------
async def newsletter(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Send an edition's draft as a file (html, md, docx), a preview link, or the archive."""
    words = [w.lower() for w in msg.args.split()]
    if words == ["archive"]:
        return await _archive(ctx)
    number = next((w.lstrip("#") for w in words if w.lstrip("#").isdigit()), None)
    kinds = [w for w in words if not w.lstrip("#").isdigit()]
    if len(kinds) > 1 or (kinds and kinds[0] not in (*FORMATS, "preview")) or \
            len(words) - len(kinds) > 1:
        raise UserError("newsletter.newsletter_usage")
    kind = kinds[0] if kinds else "html"
    found = await _edition(ctx, number) if number else await store.current(ctx.session)
    if found is None:
        raise UserError("newsletter.no_edition")
    assert ctx.person is not None
    published = found.status == EditionStatus.PUBLISHED
    draft = await compile_draft(ctx.session, found, ctx.renderer, now=ctx.now, by=ctx.person.id,
                                record=not published)
    if kind == "preview":
        return [preview_reply(ctx, found, draft.number)]
    mime, _ = FORMATS[kind]
    content = render(draft, kind)
    final = await store.latest_draft(ctx.session, found.id) if published else None
    if kind == "html" and final is not None and final.html:
        content = final.html.encode("utf-8")  # the edition as it was published
    await ctx.audit("newsletter.draft", f"edition:{found.number}", draft=draft.number,
                    format=kind)
    return [Outgoing("newsletter.draft_sent", {
        "draft": draft.number, "number": found.number, "title": found.title, "format": kind,
        "count": len(draft.items), "new": draft.is_new},
        file=OutFile(draft.file_name(kind), mime, content))]


async def _archive(ctx: Context) -> list[Outgoing]:
    rows = await store.all_editions(ctx.session, published=True)
    counts = await store.counts(ctx.session, [e.id for e in rows])
    return [Outgoing("newsletter.archive", {"editions": [
        {"number": e.number, "title": e.title, "published": e.published_at,
         "count": counts.get(e.id, 0)} for e in rows]})]


# -- the signed preview link ------------------------------------------------------------------
def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=PREVIEW_SALT)


def preview_token(secret: str, edition_number: int, person_id: int, expires: datetime) -> str:
    return _serializer(secret).dumps({"e": edition_number, "p": person_id,
                                      "x": int(expires.timestamp())})


def read_preview_token(secret: str, token: str, now: datetime) -> tuple[int, int] | None:
    """(edition number, person id) of a genuine, unexpired link; None otherwise."""
    if not secret:
        return None
    serializer = _serializer(secret)
    try:
        data = serializer.loads(token)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), int) for k in "epx"):
        return None
    # Base64 decoding ignores the spare low bits of a token's last character, so a few altered
    # tokens still decode to the genuine signature: only the one spelling we issue is valid.
    if not hmac.compare_digest(serializer.dumps(data), token):
        return None
    if data["x"] <= now.timestamp():
        return None
    return int(data["e"]), int(data["p"])


def preview_reply(ctx: Context, found: Edition, draft: int) -> Outgoing:
    if not ctx.config.secret_key:
        raise UserError("newsletter.preview_unconfigured")
    assert ctx.person is not None
    expires = ctx.now + ctx.config.preview_ttl
    token = preview_token(ctx.config.secret_key, found.number, ctx.person.id, expires)
    url = f"{ctx.config.public_url.rstrip('/')}/newsletter/preview/{token}"
    return Outgoing("newsletter.preview_link", {
        "number": found.number, "draft": draft, "url": url, "expires": expires,
        "tz": ctx.person.timezone}, private=True)
