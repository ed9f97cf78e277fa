"""Deadlines and action points in chat: /deadlines, /deadline, /actions, /action, /away, /timezone."""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select

from handlers import forms
from handlers.context import Context
from handlers.digest import owner_label
from handlers.forms import Field, Form
from handlers.network import find_member
from handlers.reminders import load_roster, member_targets, person_targets, roster_of
from handlers.types import Choice, Incoming, Outgoing, UserError
from storage.deadlines import (
    DEFAULT_OFFSETS,
    add_action_point,
    audience,
    find_timezone,
    mark_done,
    offset_delta,
    owes,
    parse_offsets,
    scheduled_at,
    sync_deadline,
    zone,
)
from storage.models import ActionOwner, ActionPoint, Deadline, DeadlineKind, RoleName

DEFAULT_DUE_TIME = time(17, 0)
LIST_LIMIT = 20

# -- /away ------------------------------------------------------------------------------

_IN = re.compile(r"^in\s+(\d{1,3}|a|an|one|two|three|four)\s+(day|week|month)s?$")
_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m} | {
    m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAY_MONTH = re.compile(r"^(\d{1,2})\s+([a-z]+)\.?(?:\s+(\d{4}))?$")
_MONTH_DAY = re.compile(r"^([a-z]+)\.?\s+(\d{1,2})(?:,?\s+(\d{4}))?$")


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def parse_until(text: str, today: date) -> date:
    """The last day away: `2018-04-20`, `20 April [2018]`, `April 20`, `tomorrow`,
    `in 2 weeks` (a day, N days, weeks or months). ValueError for anything else."""
    value = " ".join(text.strip().lower().split())
    if value == "tomorrow":
        return today + timedelta(days=1)
    m = _IN.match(value)
    if m:
        n = int(m.group(1)) if m.group(1).isdigit() else _WORDS[m.group(1)]
        unit = m.group(2)
        if unit == "month":
            return _add_months(today, n)
        return today + timedelta(days=n * (7 if unit == "week" else 1))
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    for pattern, day_first in ((_DAY_MONTH, True), (_MONTH_DAY, False)):
        m = pattern.match(value)
        if m:
            day_s, month_s = (m.group(1), m.group(2)) if day_first else (m.group(2), m.group(1))
            if month_s not in _MONTHS:
                raise ValueError(text)
            year = int(m.group(3)) if m.group(3) else today.year
            found = date(year, _MONTHS[month_s], int(day_s))  # ValueError for 31 June
            if not m.group(3) and found < today:
                found = date(year + 1, found.month, found.day)
            return found
    raise ValueError(text)


def _local_today(ctx: Context) -> date:
    assert ctx.person is not None
    return ctx.now.astimezone(zone(ctx.person.timezone)).date()


async def away(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Pause your reminders until a day (`/away until 20 April`, `in 2 weeks`), or `/away off`."""
    person = ctx.person
    assert person is not None
    args = msg.args.strip()
    if not args:
        return [Outgoing("deadlines.away_status", {"until": person.away_until,
                                                   "today": _local_today(ctx)})]
    if args.lower() in ("off", "back", "stop"):
        was = person.away_until
        person.away_until = None
        await ctx.audit("person.back")
        return [Outgoing("deadlines.away_off", {"was": was is not None})]
    text = re.sub(r"^until\s+", "", args, flags=re.IGNORECASE)
    try:
        until = parse_until(text, _local_today(ctx))
    except ValueError:
        raise UserError("deadlines.away_unparsed", text=args) from None
    if until < _local_today(ctx):
        raise UserError("deadlines.away_past", day=until)
    person.away_until = until
    await ctx.audit("person.away", until=until.isoformat())
    members = [m.name for m in ctx.own_members()]
    return [Outgoing("deadlines.away_on", {"until": until, "members": members})]


# -- /timezone ----------------------------------------------------------------------------


async def timezone(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Show or set your time zone (`/timezone Europe/Berlin`)."""
    person = ctx.person
    assert person is not None
    if not msg.args:
        return [Outgoing("deadlines.timezone_show", {"zone": person.timezone,
                                                     "now": ctx.now})]
    found, close = find_timezone(msg.args)
    if found is None:
        raise UserError("deadlines.timezone_unknown", text=msg.args, close=close)
    person.timezone = found
    await ctx.audit("person.timezone", zone=found)
    return [Outgoing("deadlines.timezone_set", {"zone": found, "now": ctx.now, "tz": found})]


# -- /deadlines ---------------------------------------------------------------------------


async def _mine(ctx: Context) -> list[tuple[Deadline, str, bool]]:
    """The open deadlines that concern the caller: (deadline, for which member, still owed)."""
    person = ctx.person
    assert person is not None
    roster = await roster_of(ctx.session, person)  # only their part: see `roster_of`
    own = {m.id: m for m in ctx.own_members()}
    found: list[tuple[Deadline, str, bool]] = []
    for d in await ctx.session.scalars(
            select(Deadline).where(Deadline.cancelled_at.is_(None), Deadline.due_at > ctx.now)
            .order_by(Deadline.due_at, Deadline.id)):
        members = [own[m] for m in member_targets(d, roster, ctx.now) if m in own]
        if members:
            for m in members:
                found.append((d, m.name, await owes(ctx.session, d, m.id, None)))
        elif person in person_targets(d, roster):
            found.append((d, "", await owes(ctx.session, d, None, person.id)))
        elif ctx.is_secretariat:
            found.append((d, "*", True))
    return found[:LIST_LIMIT]


async def deadline_items(ctx: Context) -> list[dict[str, Any]]:
    """The caller's open deadlines, soonest first, for /deadlines and the dashboard."""
    return [{"id": d.id, "title": d.title, "asks": d.asks, "due": d.due_at, "member": m,
             "owed": owed, "kind": d.kind, "all": m == "*"}
            for d, m, owed in await _mine(ctx)]


async def deadlines(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """List your open deadlines, in your time zone, with what each asks of you."""
    assert ctx.person is not None
    items = await deadline_items(ctx)
    return [Outgoing("deadlines.list", {"items": items, "tz": ctx.person.timezone,
                                        "secretariat": ctx.is_secretariat}, private=True)]


async def deadline(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """`/deadline new` (secretariat) or `/deadline done N` for your member."""
    words = msg.args.split()
    if not words:
        return await deadlines(msg, ctx)
    if words[0].lower() == "new":
        if not ctx.is_secretariat:
            raise UserError("errors.secretariat_only", command="deadline new")
        return [await forms.start(ctx, DEADLINE_FORM)]
    if words[0].lower() == "done" and len(words) == 2 and words[1].isdigit():
        return await _done(ctx, int(words[1]))
    raise UserError("deadlines.deadline_usage")


async def _done(ctx: Context, deadline_id: int) -> list[Outgoing]:
    person = ctx.person
    assert person is not None
    d = await ctx.session.get(Deadline, deadline_id)
    if d is None or d.cancelled_at is not None:
        raise UserError("deadlines.unknown", id=deadline_id)
    if d.kind == DeadlineKind.ACTION_POINT and d.ref_id is not None:
        return await _action_done(ctx, d.ref_id)
    if d.kind != DeadlineKind.CUSTOM:
        raise UserError("deadlines.not_markable", title=d.title)
    roster = await load_roster(ctx.session)
    own = [m for m in ctx.own_members() if m.id in member_targets(d, roster, ctx.now)]
    if own:
        marked = [m.name for m in own
                  if await mark_done(ctx.session, d, member_id=m.id, person_id=None,
                                     by=person.id, now=ctx.now)]
    elif person in person_targets(d, roster):
        marked = ([person.name] if await mark_done(ctx.session, d, member_id=None,
                                                   person_id=person.id, by=person.id,
                                                   now=ctx.now) else [])
    else:
        raise UserError("deadlines.not_yours", title=d.title)
    await ctx.audit("deadline.done", f"deadline:{d.id}", members=marked)
    return [Outgoing("deadlines.done", {"title": d.title, "marked": marked,
                                        "already": not marked})]


# -- /deadline new (a form) ---------------------------------------------------------------


def _due(ctx: Context, answers: dict[str, Any], clock: str) -> datetime:
    assert ctx.person is not None
    day = date.fromisoformat(answers["due_date"])
    hh, mm = (int(x) for x in clock.split(":"))
    return datetime.combine(day, time(hh, mm), tzinfo=zone(ctx.person.timezone)).astimezone(
        ctx.now.tzinfo)


async def _due_time(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    m = re.match(r"^(\d{1,2})[:.h](\d{2})$", value.strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise UserError("deadlines.bad_time", text=value)
    clock = f"{int(m.group(1)):02d}:{m.group(2)}"
    if _due(ctx, answers, clock) <= ctx.now:
        raise UserError("deadlines.past")
    return clock


async def _due_date(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    assert ctx.person is not None
    if date.fromisoformat(value) < _local_today(ctx):
        raise UserError("deadlines.past")
    return value


async def _offsets(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    try:
        offsets = parse_offsets(value)
    except ValueError as exc:
        raise UserError("deadlines.bad_offset", text=str(exc)) from None
    due = _due(ctx, answers, answers.get("due_time") or f"{DEFAULT_DUE_TIME:%H:%M}")
    left = due - ctx.now
    assert ctx.person is not None
    for o in offsets:
        if scheduled_at(due, o, ctx.person.timezone) <= ctx.now:
            raise UserError("deadlines.offset_too_long", offset=o, days=left.days,
                            hours=int(left.total_seconds() // 3600))
    return " ".join(offsets)


async def _audiences(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice(v, ctx.label(f"deadlines.audience_{v}"))
            for v in ("focal_points", "troika", "chair", "secretariat")]


_AUDIENCE = {
    "focal_points": audience(roles=[RoleName.FOCAL_POINT]),
    "troika": audience(troika=True),
    "chair": audience(chair=True),
    "secretariat": audience(roles=[RoleName.SECRETARIAT]),
}


async def _submit_deadline(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    assert ctx.person is not None
    due = _due(ctx, answers, answers.get("due_time") or f"{DEFAULT_DUE_TIME:%H:%M}")
    if due <= ctx.now:
        raise UserError("deadlines.past")
    offsets = parse_offsets(answers["offsets"]) if answers.get("offsets") else [
        o for o in DEFAULT_OFFSETS if scheduled_at(due, o, ctx.person.timezone) > ctx.now]
    d = await sync_deadline(ctx.session, DeadlineKind.CUSTOM, None, due, answers["title"],
                            _AUDIENCE[answers["audience"]], now=ctx.now, offsets=offsets,
                            asks=answers.get("asks", ""), created_by=ctx.person.id)
    await ctx.audit("deadline.created", f"deadline:{d.id}", due=due.isoformat())
    return [Outgoing("deadlines.created", {
        "id": d.id, "title": d.title, "due": due, "tz": ctx.person.timezone,
        "audience": ctx.label(f"deadlines.audience_{answers['audience']}"),
        "offsets": [_offset_words(ctx, o) for o in offsets]}, closes_form=True)]


def _offset_words(ctx: Context, offset: str) -> str:
    delta = offset_delta(offset)
    return ctx.label("deadlines.offset_words", morning=delta == timedelta(0),
                     days=delta.days, hours=delta.seconds // 3600)


DEADLINE_FORM = Form(
    name="deadline",
    title="deadlines.form_title",
    fields=(
        Field("title", "deadlines.ask_title", max_length=200),
        Field("asks", "deadlines.ask_asks", kind="multiline", required=False, max_length=1000),
        Field("due_date", "deadlines.ask_due_date", kind="date", validate=_due_date),
        Field("due_time", "deadlines.ask_due_time", required=False, max_length=5,
              validate=_due_time, hint="deadlines.ask_due_time_hint"),
        Field("audience", "deadlines.ask_audience", kind="choice", choices=_audiences),
        Field("offsets", "deadlines.ask_offsets", required=False, max_length=60,
              validate=_offsets, hint="deadlines.ask_offsets_hint"),
    ),
    submit=_submit_deadline,
)

# -- action points --------------------------------------------------------------------------


async def actions(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """List the Network's open action points (`/actions all` shows the done ones too)."""
    show_all = msg.args.strip().lower() == "all"
    query = select(ActionPoint).order_by(ActionPoint.status.desc(),
                                         ActionPoint.due_at.is_(None), ActionPoint.due_at,
                                         ActionPoint.id)
    if not show_all:
        query = query.where(ActionPoint.status == "open")
    items = [{"id": a.id, "text": a.text, "owner": owner_label(a), "due": a.due_at,
              "meeting": a.meeting, "done": a.status == "done",
              "overdue": a.status == "open" and a.due_at is not None and a.due_at < ctx.now}
             for a in await ctx.session.scalars(query)]
    return [Outgoing("deadlines.actions", {"items": items, "all": show_all})]


async def action(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """`/action new` (secretariat) or `/action done N`."""
    words = msg.args.split()
    if words and words[0].lower() == "new":
        if not ctx.is_secretariat:
            raise UserError("errors.secretariat_only", command="action new")
        return [await forms.start(ctx, ACTION_FORM)]
    if len(words) == 2 and words[0].lower() == "done" and words[1].isdigit():
        return await _action_done(ctx, int(words[1]))
    raise UserError("deadlines.action_usage")


async def _may_close(ctx: Context, a: ActionPoint) -> bool:
    if ctx.is_secretariat:
        return True
    own = {m.id for m in ctx.own_members()}
    if a.owner == ActionOwner.MEMBER:
        return a.owner_member_id in own
    if a.owner == ActionOwner.FOCAL_POINTS:
        return bool(own)
    if a.owner in (ActionOwner.TROIKA, ActionOwner.CHAIR):
        roster = await load_roster(ctx.session)
        seats = roster.troika(ctx.now.year) if a.owner == ActionOwner.TROIKA else [
            roster.chairs.get(ctx.now.year)]
        return bool(own & {s for s in seats if s is not None})
    return False


async def _action_done(ctx: Context, number: int) -> list[Outgoing]:
    a = await ctx.session.scalar(select(ActionPoint).where(ActionPoint.id == number)
                                 .with_for_update(of=ActionPoint))
    if a is None:
        raise UserError("deadlines.unknown_action", id=number)
    if a.status == "done":
        return [Outgoing("deadlines.action_already", {"id": a.id, "text": a.text})]
    if not await _may_close(ctx, a):
        raise UserError("deadlines.action_not_yours", id=a.id)
    a.status, a.done_at = "done", ctx.now
    a.done_by = ctx.person.id if ctx.person else None
    await ctx.audit("action.done", f"action:{a.id}")
    return [Outgoing("deadlines.action_done", {"id": a.id, "text": a.text})]


async def _owner(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    folded = value.strip().casefold().replace(" ", "_")
    for owner in ActionOwner:
        if owner != ActionOwner.MEMBER and folded in (owner.value, owner.value.rstrip("s"),
                                                      "the_" + owner.value):
            return owner.value
    member = await find_member(ctx.session, value)
    if member is None:
        raise UserError("deadlines.bad_owner", text=value)
    return f"member:{member.code}"


async def _action_due(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    if date.fromisoformat(value) < _local_today(ctx):
        raise UserError("deadlines.past")
    return value


async def _submit_action(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    assert ctx.person is not None
    owner, member_id, member = answers["owner"], None, None
    if owner.startswith("member:"):
        member = await find_member(ctx.session, owner.split(":", 1)[1])
        assert member is not None
        owner, member_id = ActionOwner.MEMBER.value, member.id
    due_at = None
    if answers.get("due"):
        due_at = datetime.combine(date.fromisoformat(answers["due"]), DEFAULT_DUE_TIME,
                                  tzinfo=zone(ctx.person.timezone)).astimezone(ctx.now.tzinfo)
        if due_at <= ctx.now:
            raise UserError("deadlines.past")
    a = await add_action_point(ctx.session, text=answers["text"], owner=owner,
                               member_id=member_id, due_at=due_at,
                               meeting=answers.get("meeting", ""), now=ctx.now,
                               created_by=ctx.person.id)
    await ctx.audit("action.created", f"action:{a.id}")
    label = member.name if member is not None else owner_label(a)
    return [Outgoing("deadlines.action_created", {"id": a.id, "text": a.text,
                                                  "owner": label, "due": due_at,
                                                  "tz": ctx.person.timezone},
                     closes_form=True)]


ACTION_FORM = Form(
    name="action",
    title="deadlines.action_form_title",
    fields=(
        Field("text", "deadlines.ask_action_text", kind="multiline", max_length=1000),
        Field("meeting", "deadlines.ask_action_meeting", required=False, max_length=200),
        Field("owner", "deadlines.ask_action_owner", max_length=120, validate=_owner,
              hint="deadlines.ask_action_owner_hint"),
        Field("due", "deadlines.ask_action_due", kind="date", required=False,
              validate=_action_due),
    ),
    submit=_submit_action,
)
