"""Meetings: the secretariat plans them, people register, the waitlist moves, calendars follow.

pretix's model: past capacity a registration joins the waitlist in order; a cancellation gives
its seat to the first in line, who is told at once and gets the calendar invitation. With
approval on, registrations wait as pending until the secretariat decides. Every seat is taken
through `storage.meetings` (a conditional update on the meeting's seat counter, under the
meeting's row lock), never by counting and then inserting.

Calendar files are RFC 5545, built with `icalendar`: the venue's time zone as a VTIMEZONE, one
UID per meeting for good, SEQUENCE raised by every change of time or place, METHOD:CANCEL when
the meeting (or one's place) is cancelled.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select

from handlers import forms
from handlers.context import Context
from handlers.forms import Field, Form
from handlers.network import find_member, member_by_code
from handlers.types import Choice, Incoming, OutFile, Outgoing, UserError
from storage import meetings as store
from storage.meeting_deadlines import sync_meeting
from storage.models import (
    ACTIVE_REGISTRATION,
    MEMBER_ROLES,
    NETWORK_ROLES,
    Meeting,
    MeetingKind,
    MeetingStatus,
    Member,
    Person,
    Registration,
    RegistrationStatus,
    RoleName,
)

MAX_TITLE = 200
WHEN_FORMAT = "%Y-%m-%d %H:%M"
ELIGIBLE = {
    "focal_points": [RoleName.FOCAL_POINT],
    "members": [RoleName.FOCAL_POINT, RoleName.ALTERNATE],
    "everyone": [RoleName.FOCAL_POINT, RoleName.ALTERNATE, RoleName.CIVIL_SOCIETY],
}
DELEGATION_ROLES = ("head", "member", "adviser")
MAX_BUTTONS = 8
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet cell a formula


# -- small readings --------------------------------------------------------------------------
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError("meetings.bad_timezone", text=name) from None


def _local_text(value: datetime, tz: str) -> str:
    return value.astimezone(ZoneInfo(tz)).strftime(WHEN_FORMAT)


def _parse_local(value: str, tz: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("T", " "))
    except ValueError:
        raise UserError("meetings.bad_when", text=value) from None
    if len(value.strip()) <= 10:  # a date alone: the time is needed
        raise UserError("meetings.bad_when", text=value)
    zone = _zone(tz)
    wall = parsed.replace(tzinfo=None)
    early, late = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    if early.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
        # No such wall-clock time: the clocks jump over it (spring forward).
        raise UserError("meetings.when_skipped", text=value.strip(), tz=tz)
    if early.utcoffset() != late.utcoffset():
        # The hour the clocks go back: this wall-clock time happens twice.
        raise UserError("meetings.when_twice", text=value.strip(), tz=tz)
    return early.astimezone(UTC)


def _number(text: str, command: str = "meeting") -> int:
    value = text.strip().lstrip("#")
    if not value.isdigit():
        raise UserError("meetings.which_meeting", command=command)
    return int(value)


def _window(meeting: Meeting, now: datetime) -> str:
    """Where registration stands: open, not_open, closed, past or cancelled."""
    if meeting.status == MeetingStatus.CANCELLED:
        return "cancelled"
    if meeting.starts_at <= now:
        return "past"
    if now < meeting.registration_opens_at:
        return "not_open"
    if now >= meeting.registration_closes_at:
        return "closed"
    return "open"


def _seats_left(meeting: Meeting) -> int | None:
    if meeting.capacity is None:
        return None
    return max(meeting.capacity - meeting.confirmed_count, 0)


def _eligible_choice(roles: list[Any]) -> str:
    for value, wanted in ELIGIBLE.items():
        if sorted(wanted) == sorted(roles):
            return value
    return "everyone"


def _network_role(ctx: Context) -> str:
    """The caller's role as a registration records it (the most senior they hold)."""
    held = {r.role for r in ctx.roles}
    for role in (RoleName.FOCAL_POINT, RoleName.ALTERNATE, RoleName.CIVIL_SOCIETY,
                 RoleName.SECRETARIAT, RoleName.ADMIN):
        if role in held:
            return str(role)
    return ""


def _may_register(ctx: Context, meeting: Meeting) -> bool:
    if ctx.is_secretariat:
        return True
    return any(r.role in meeting.eligible_roles for r in ctx.roles)


def view(ctx: Context, meeting: Meeting, mine: Registration | None = None) -> dict[str, Any]:
    """What a message shows of a meeting."""
    own = mine if mine is not None and mine.status in ACTIVE_REGISTRATION else None
    return {
        "id": meeting.id, "title": meeting.title,
        "kind": ctx.label(f"meetings.kind_{meeting.kind}"),
        "host": meeting.host.name if meeting.host else "",
        "venue": meeting.venue, "online_url": meeting.online_url,
        "agenda_url": meeting.agenda_url, "venue_tz": meeting.timezone,
        "starts": meeting.starts_at, "ends": meeting.ends_at,
        "opens": meeting.registration_opens_at, "closes": meeting.registration_closes_at,
        "capacity": meeting.capacity, "seats_left": _seats_left(meeting),
        "delegation_limit": meeting.delegation_limit, "approval": meeting.needs_approval,
        "chatham": meeting.chatham_house, "window": _window(meeting, ctx.now),
        "eligible": ctx.label(f"meetings.eligible_{_eligible_choice(meeting.eligible_roles)}"),
        "mine": ctx.label(f"meetings.status_{own.status}") if own else "",
        "mine_code": own.status if own else "",
    }


def _registration_view(ctx: Context, reg: Registration) -> dict[str, Any]:
    return {"registration": reg.id, "name": reg.name, "email": reg.email,
            "job_title": reg.title,
            "member": reg.member.name if reg.member else "",
            "status": ctx.label(f"meetings.status_{reg.status}"), "status_code": reg.status,
            "delegation_role": ctx.label(f"meetings.delegation_{reg.delegation_role}"),
            "attended": reg.attended_at is not None}


# -- calendar files --------------------------------------------------------------------------
def calendar_file(ctx: Context, meeting: Meeting, reg: Registration, *,
                  cancel: bool = False) -> OutFile:
    """The meeting as an RFC 5545 invitation (or its cancellation) for one registrant."""
    from icalendar import Calendar, Event, vCalAddress  # loaded when a first file is made
    from slugify import slugify

    zone = ZoneInfo(meeting.timezone)
    cal = Calendar()
    cal.add("prodid", "-//Focal Points Bot//Meetings//EN")
    cal.add("version", "2.0")
    cal.add("method", "CANCEL" if cancel else "REQUEST")
    event = Event()
    event.add("uid", meeting.uid)
    event.add("sequence", meeting.sequence)
    event.add("dtstamp", ctx.now)
    event.add("dtstart", meeting.starts_at.astimezone(zone))
    event.add("dtend", meeting.ends_at.astimezone(zone))
    event.add("summary", meeting.title)
    location = ", ".join(p for p in (meeting.venue, meeting.online_url) if p)
    if location:
        event.add("location", location)
    url = meeting.online_url or meeting.agenda_url
    if url:
        event.add("url", url)
    event.add("description", ctx.label("meetings.ics_description", **view(ctx, meeting)))
    event.add("status", "CANCELLED" if cancel or meeting.status == MeetingStatus.CANCELLED
              else "CONFIRMED")
    organizer = vCalAddress("mailto:secretariat@focalpoints.invalid")
    organizer.params["cn"] = ctx.label("meetings.ics_organizer")
    event.add("organizer", organizer)
    attendee = vCalAddress(f"mailto:{reg.email}")
    attendee.params["cn"] = reg.name
    attendee.params["role"] = "REQ-PARTICIPANT"
    event.add("attendee", attendee)
    cal.add_component(event)
    cal.add_missing_timezones()
    # One file per attendee: a delegate's invitation must not overwrite the registrant's own.
    who = slugify(reg.name) or slugify(reg.email) or f"registration-{reg.id}"
    suffix = "-cancelled" if cancel else ""
    return OutFile(f"meeting-{meeting.id}-{who}{suffix}.ics", "text/calendar", cal.to_ical())


async def _recipient(ctx: Context, reg: Registration) -> Person | None:
    """Who hears about a registration: the attendee, or whoever registered them."""
    person_id = reg.person_id or reg.registered_by
    return await ctx.session.get(Person, person_id) if person_id else None


async def _tell(ctx: Context, reg: Registration, meeting: Meeting, key: str, *,
                ics: bool = False, cancel: bool = False,
                extra: dict[str, Any] | None = None) -> None:
    person = await _recipient(ctx, reg)
    if person is None:
        return
    file = calendar_file(ctx, meeting, reg, cancel=cancel) if ics else None
    await ctx.notify(
        Outgoing(key, {**view(ctx, meeting, reg), "attendee": reg.name,
                       "for_other": person.id != reg.person_id, **(extra or {})},
                 file=file, private=True),
        person=person)


# -- /meetings and /meeting N ----------------------------------------------------------------
async def list_meetings(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """List upcoming meetings with seats left and the caller's own status."""
    assert ctx.person is not None
    rows = await store.upcoming(ctx.session, ctx.now)
    mine = await store.registrations_for(ctx.session, [m.id for m in rows], [ctx.person.email])
    shown = [view(ctx, m, mine.get(m.id)) for m in rows]
    choices = tuple(Choice(f"/register {m['id']}", ctx.label("meetings.register_button",
                                                            id=m["id"]))
                    for m in shown if m["window"] == "open" and not m["mine"])[:MAX_BUTTONS]
    return [Outgoing("meetings.list", {"meetings": shown}, choices=choices)]


async def meeting(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Show a meeting (/meeting N), or for the secretariat: /meeting new|edit N|cancel N."""
    verb, _, rest = msg.args.partition(" ")
    if verb.lower() in ("new", "edit", "cancel"):
        if not ctx.is_secretariat:
            raise UserError("errors.secretariat_only", command=f"meeting {verb.lower()}")
        if verb.lower() == "new":
            return [await forms.start(ctx, MEETING_FORM, {})]
        if verb.lower() == "edit":
            return await _start_edit(ctx, rest)
        return await _cancel_meeting(ctx, rest)
    if not msg.args:
        return await list_meetings(msg, ctx)
    row = await _meeting(ctx, msg.args)
    assert ctx.person is not None
    mine = await store.registration(ctx.session, row.id, ctx.person.email)
    shown = view(ctx, row, mine)
    choices: list[Choice] = []
    if shown["window"] == "open" and not shown["mine"]:
        choices.append(Choice(f"/register {row.id}", ctx.label("meetings.register_button",
                                                              id=row.id)))
    if shown["mine"]:
        choices.append(Choice(f"/unregister {row.id}", ctx.label("meetings.unregister_button")))
    if ctx.is_secretariat:
        choices += [Choice(f"/participants {row.id}", ctx.label("meetings.participants_button")),
                    Choice(f"/meeting edit {row.id}", ctx.label("meetings.edit_button"))]
    return [Outgoing("meetings.detail", shown, choices=tuple(choices))]


async def _meeting(ctx: Context, text: str, *, lock: bool = False) -> Meeting:
    number = _number(text, ctx.incoming.command or "meeting")
    row = await (store.lock_meeting(ctx.session, number) if lock
                 else store.get_meeting(ctx.session, number))
    if row is None:
        raise UserError("meetings.unknown", id=number)
    return row


# -- the meeting form (secretariat) ----------------------------------------------------------
async def _kind_choices(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice(k.value, ctx.label(f"meetings.kind_{k.value}")) for k in MeetingKind]


async def _eligible_choices(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice(v, ctx.label(f"meetings.eligible_{v}")) for v in ELIGIBLE]


async def _yes_no(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice("yes", ctx.label("meetings.yes")), Choice("no", ctx.label("meetings.no"))]


async def _check_host(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    member = await find_member(ctx.session, value)
    if member is None:
        raise UserError("forms.unknown_member", text=value)
    return member.code


async def _check_timezone(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    _zone(value)
    return value


async def _check_starts(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    _parse_local(value, answers.get("timezone") or "UTC")
    return value


async def _check_ends(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    tz = answers.get("timezone") or "UTC"
    ends = _parse_local(value, tz)
    if answers.get("starts") and ends <= _parse_local(answers["starts"], tz):
        raise UserError("meetings.ends_before_start")
    return value


async def _check_opens(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    _parse_local(value, answers.get("timezone") or "UTC")
    return value


async def _check_closes(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    tz = answers.get("timezone") or "UTC"
    closes = _parse_local(value, tz)
    if answers.get("starts") and closes > _parse_local(answers["starts"], tz):
        raise UserError("meetings.closes_after_start")
    opens = _parse_local(answers["opens"], tz) if answers.get("opens") else ctx.now  # skip: now
    if closes <= opens:
        raise UserError("meetings.closes_before_opening")
    return value


async def _check_count(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    if not value.isdigit() or not 0 < int(value) <= 100_000:
        raise UserError("meetings.bad_number", text=value)
    return str(int(value))


MEETING_FORM = Form(
    name="meeting",
    title="meetings.form_title",
    fields=(
        Field("title", "meetings.ask_title", max_length=MAX_TITLE),
        Field("kind", "meetings.ask_kind", kind="choice", choices=_kind_choices),
        Field("host", "meetings.ask_host", required=False, max_length=120,
              validate=_check_host),
        Field("venue", "meetings.ask_venue", required=False, max_length=300),
        Field("online_url", "meetings.ask_online", kind="url", required=False, max_length=500),
        Field("timezone", "meetings.ask_timezone", max_length=64, validate=_check_timezone,
              hint="meetings.ask_timezone_hint"),
        Field("starts", "meetings.ask_starts", max_length=20, validate=_check_starts,
              hint="meetings.ask_when_hint"),
        Field("ends", "meetings.ask_ends", max_length=20, validate=_check_ends,
              hint="meetings.ask_when_hint"),
        Field("opens", "meetings.ask_opens", required=False, max_length=20,
              validate=_check_opens, hint="meetings.ask_opens_hint"),
        Field("closes", "meetings.ask_closes", required=False, max_length=20,
              validate=_check_closes, hint="meetings.ask_closes_hint"),
        Field("capacity", "meetings.ask_capacity", required=False, max_length=6,
              validate=_check_count, hint="meetings.ask_capacity_hint"),
        Field("delegation_limit", "meetings.ask_delegation_limit", required=False,
              max_length=3, validate=_check_count),
        Field("eligible", "meetings.ask_eligible", kind="choice", choices=_eligible_choices),
        Field("approval", "meetings.ask_approval", kind="choice", choices=_yes_no),
        Field("agenda_url", "meetings.ask_agenda", kind="url", required=False, max_length=500),
        Field("chatham", "meetings.ask_chatham", kind="choice", choices=_yes_no,
              hint="meetings.ask_chatham_hint"),
    ),
    submit=lambda ctx, answers: _save_meeting(ctx, answers),
    submit_label="meetings.form_submit",
)


def _meeting_values(ctx: Context, answers: dict[str, Any]) -> dict[str, Any]:
    """The columns a submitted meeting form sets (times converted from the venue's zone)."""
    tz = answers["timezone"]
    starts = _parse_local(answers["starts"], tz)
    ends = _parse_local(answers["ends"], tz)
    opens = _parse_local(answers["opens"], tz) if answers.get("opens") else ctx.now
    closes = _parse_local(answers["closes"], tz) if answers.get("closes") else starts
    if ends <= starts:
        raise UserError("meetings.ends_before_start")
    if closes > starts:
        raise UserError("meetings.closes_after_start")
    if closes <= opens:
        raise UserError("meetings.closes_before_opening")
    if not answers.get("venue") and not answers.get("online_url"):
        raise UserError("meetings.where")
    return dict(
        title=answers["title"], kind=answers["kind"], venue=answers.get("venue") or "",
        online_url=answers.get("online_url") or "", timezone=tz, starts_at=starts,
        ends_at=ends, registration_opens_at=opens, registration_closes_at=closes,
        capacity=int(answers["capacity"]) if answers.get("capacity") else None,
        delegation_limit=(int(answers["delegation_limit"]) if answers.get("delegation_limit")
                          else None),
        eligible_roles=[str(r) for r in ELIGIBLE[answers["eligible"]]],
        needs_approval=answers["approval"] == "yes", agenda_url=answers.get("agenda_url") or "",
        chatham_house=answers["chatham"] == "yes",
    )


async def _save_meeting(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    if answers.get("meeting_id"):
        return await _save_edit(ctx, answers)
    assert ctx.person is not None
    values = _meeting_values(ctx, answers)
    host = await member_by_code(ctx.session, answers["host"]) if answers.get("host") else None
    row = Meeting(uid=store.new_uid(), host_member_id=host.id if host else None,
                  created_by=ctx.person.id, created_at=ctx.now, updated_at=ctx.now, **values)
    ctx.session.add(row)
    await ctx.session.flush()
    await ctx.session.refresh(row, ["host"])
    await sync_meeting(ctx.session, row, ctx.now)
    await ctx.audit("meeting.created", f"meeting:{row.id}", title=row.title,
                    starts_at=row.starts_at.isoformat(), capacity=row.capacity)
    return [Outgoing("meetings.created", view(ctx, row), closes_form=True,
                     choices=(Choice(f"/meeting {row.id}", ctx.label("meetings.show_button")),))]


async def _start_edit(ctx: Context, number: str) -> list[Outgoing]:
    row = await _meeting(ctx, number)
    if row.status == MeetingStatus.CANCELLED:
        raise UserError("meetings.is_cancelled", id=row.id, title=row.title)
    tz = row.timezone
    answers = {
        "meeting_id": row.id, "title": row.title, "kind": row.kind,
        "host": row.host.code if row.host else "", "venue": row.venue,
        "online_url": row.online_url, "timezone": tz,
        "starts": _local_text(row.starts_at, tz), "ends": _local_text(row.ends_at, tz),
        "opens": _local_text(row.registration_opens_at, tz),
        "closes": _local_text(row.registration_closes_at, tz),
        "capacity": str(row.capacity or ""), "delegation_limit": str(row.delegation_limit or ""),
        "eligible": _eligible_choice(row.eligible_roles),
        "approval": "yes" if row.needs_approval else "no", "agenda_url": row.agenda_url,
        "chatham": "yes" if row.chatham_house else "no",
    }
    return [Outgoing("meetings.editing", view(ctx, row)),
            await forms.start(ctx, MEETING_FORM, answers)]


async def _active(ctx: Context, meeting: Meeting) -> list[Registration]:
    return await store.participants(ctx.session, meeting.id, list(ACTIVE_REGISTRATION))


async def _save_edit(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    row = await _meeting(ctx, str(answers["meeting_id"]), lock=True)
    if row.status == MeetingStatus.CANCELLED:
        raise UserError("meetings.is_cancelled", id=row.id, title=row.title)
    values = _meeting_values(ctx, answers)
    if values["capacity"] is not None and values["capacity"] < row.confirmed_count:
        raise UserError("meetings.capacity_below", capacity=values["capacity"],
                        count=row.confirmed_count, id=row.id)
    host = await member_by_code(ctx.session, answers["host"]) if answers.get("host") else None
    moved = any(getattr(row, k) != values[k]
                for k in ("starts_at", "ends_at", "venue", "online_url", "timezone"))
    before = {"starts": row.starts_at.isoformat(), "venue": row.venue}
    was = {"was_starts": row.starts_at, "was_ends": row.ends_at, "was_venue": row.venue,
           "was_online": row.online_url}
    for key, value in values.items():
        setattr(row, key, value)
    row.host_member_id = host.id if host else None
    row.updated_at = ctx.now
    if moved:
        row.sequence += 1
    await ctx.session.flush()
    await ctx.session.refresh(row, ["host"])
    promoted = await store.promote_waitlisted(ctx.session, row, ctx.now)
    for reg in promoted:
        await ctx.audit("registration.promoted", f"registration:{reg.id}", meeting=row.id)
        await _tell(ctx, reg, row, "meetings.promoted", ics=True)
    told = 0
    if moved:
        for reg in await _active(ctx, row):
            if reg in promoted:
                continue
            await _tell(ctx, reg, row, "meetings.changed",
                        ics=reg.status == RegistrationStatus.CONFIRMED, extra=was)
            told += 1
    await sync_meeting(ctx.session, row, ctx.now)
    await ctx.audit("meeting.edited", f"meeting:{row.id}", moved=moved, before=before,
                    sequence=row.sequence, promoted=[r.id for r in promoted])
    return [Outgoing("meetings.edited", {**view(ctx, row), "moved": moved, "told": told,
                                         "promoted": len(promoted)}, closes_form=True)]


async def _cancel_meeting(ctx: Context, rest: str) -> list[Outgoing]:
    number, _, confirm = rest.strip().partition(" ")
    row = await _meeting(ctx, number, lock=True)
    if row.status == MeetingStatus.CANCELLED:
        raise UserError("meetings.is_cancelled", id=row.id, title=row.title)
    active = await _active(ctx, row)
    if confirm.strip().lower() == "keep":
        return [Outgoing("meetings.meeting_kept", view(ctx, row))]
    if confirm.strip().lower() != "confirm":
        return [Outgoing("meetings.cancel_confirm", {**view(ctx, row), "count": len(active)},
                         choices=(Choice(f"/meeting cancel {row.id} confirm",
                                         ctx.label("meetings.cancel_button", id=row.id)),
                                  Choice(f"/meeting cancel {row.id} keep",
                                         ctx.label("meetings.keep_button"))))]
    row.status = MeetingStatus.CANCELLED
    row.sequence += 1
    row.updated_at = ctx.now
    await ctx.session.flush()
    await sync_meeting(ctx.session, row, ctx.now)
    for reg in active:
        await _tell(ctx, reg, row, "meetings.cancelled_notice",
                    ics=reg.status == RegistrationStatus.CONFIRMED, cancel=True)
    await ctx.audit("meeting.cancelled", f"meeting:{row.id}", told=len(active))
    return [Outgoing("meetings.cancelled", {**view(ctx, row), "told": len(active)})]


# -- /register -------------------------------------------------------------------------------
def _delegate(answers: dict[str, Any]) -> bool:
    return bool(answers.get("attendee") == "delegate")


async def _attendee_choices(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice("self", ctx.label("meetings.attendee_self")),
            Choice("delegate", ctx.label("meetings.attendee_delegate"))]


async def _delegation_choices(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice(r, ctx.label(f"meetings.delegation_{r}")) for r in DELEGATION_ROLES]


async def _agree_choices(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice("agree", ctx.label("meetings.chatham_agree")),
            Choice("no", ctx.label("meetings.chatham_decline"))]


async def _check_agree(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    if value != "agree":  # declining: registering needs the agreement; say so, offer Cancel
        raise UserError("meetings.chatham_required")
    return value


async def _check_delegate_email(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    """A delegate's e-mail, refused at its own step when it is one's own or already registered."""
    assert ctx.person is not None
    if value == ctx.person.email.lower():
        raise UserError("meetings.delegate_is_you", email=value)
    if answers.get("meeting_id"):
        existing = await store.registration(ctx.session, int(answers["meeting_id"]), value)
        if existing is not None and existing.status in ACTIVE_REGISTRATION:
            raise UserError("meetings.delegate_already", email=value, name=existing.name,
                            status=ctx.label(f"meetings.status_{existing.status}"))
    return value


REGISTER_FORM = Form(
    name="register",
    title="meetings.register_title",
    fields=(
        Field("attendee", "meetings.ask_attendee", kind="choice", choices=_attendee_choices),
        Field("name", "meetings.ask_delegate_name", max_length=120, only_if=_delegate),
        Field("email", "meetings.ask_delegate_email", kind="email", max_length=254,
              only_if=_delegate, validate=_check_delegate_email),
        Field("title", "meetings.ask_delegate_title", max_length=120, only_if=_delegate),
        Field("delegation_role", "meetings.ask_delegation_role", kind="choice",
              choices=_delegation_choices),
        Field("accessibility", "meetings.ask_accessibility", kind="multiline", required=False,
              max_length=500),
        Field("visa_letter", "meetings.ask_visa", kind="choice", choices=_yes_no),
        Field("dietary", "meetings.ask_dietary", required=False, max_length=300),
        Field("chatham", "meetings.ask_chatham_ack", kind="choice", choices=_agree_choices,
              validate=_check_agree, hint="meetings.ask_chatham_ack_hint"),
    ),
    submit=lambda ctx, answers: _register_submit(ctx, answers),
    submit_label="meetings.register_submit",
)


def _refuse_window(ctx: Context, meeting: Meeting) -> None:
    window = _window(meeting, ctx.now)
    if window != "open":
        raise UserError(f"meetings.refused_{window}", **view(ctx, meeting),
                        email=ctx.person.email if ctx.person else "EMAIL")


async def register(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Open the registration form for a meeting (the one open meeting when none is named)."""
    assert ctx.person is not None
    if msg.args:
        row = await _meeting(ctx, msg.args)
    else:
        open_now = [m for m in await store.upcoming(ctx.session, ctx.now)
                    if _window(m, ctx.now) == "open"]
        if len(open_now) != 1:
            return await list_meetings(msg, ctx)
        row = open_now[0]
    _refuse_window(ctx, row)
    if not _may_register(ctx, row):
        raise UserError("meetings.refused_role", **view(ctx, row))
    mine = await store.registration(ctx.session, row.id, ctx.person.email)
    own_done = mine is not None and mine.status in ACTIVE_REGISTRATION
    if own_done and not ctx.own_members():
        raise UserError("meetings.already", **view(ctx, row, mine))
    members = ctx.own_members()
    if members and row.delegation_limit is not None and (
            await store.delegation_size(ctx.session, row.id, members[0].id)
            >= row.delegation_limit):  # said before the form opens; checked again at submit
        raise UserError("meetings.delegation_full", **view(ctx, row),
                        member=members[0].name, limit=row.delegation_limit)
    answers: dict[str, Any] = {"meeting_id": row.id}
    given: list[str] = []
    if not ctx.own_members():  # only a member's focal points register its delegation
        answers["attendee"] = "self"
        given.append("attendee")
    elif own_done:
        answers["attendee"] = "delegate"
        given.append("attendee")
    if not row.venue:  # online only: no travel, no meals
        given += ["visa_letter", "dietary"]
    if not row.chatham_house:
        given.append("chatham")
    intro = Outgoing("meetings.registering", {**view(ctx, row, mine), "own_done": own_done})
    return [intro, await forms.start(ctx, REGISTER_FORM, answers, given=tuple(given))]


async def _register_submit(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    assert ctx.person is not None
    meeting = await _meeting(ctx, str(answers["meeting_id"]), lock=True)
    _refuse_window(ctx, meeting)
    if not _may_register(ctx, meeting):
        raise UserError("meetings.refused_role", **view(ctx, meeting))
    members = ctx.own_members()
    member = members[0] if members else None
    if answers.get("attendee") == "delegate":
        if member is None:  # no longer a focal point or alternate since the form opened
            raise UserError("meetings.delegation_members_only")
        email = str(answers["email"]).lower()
        person = await ctx.session.scalar(select(Person).where(Person.email == email))
        name, title, role = answers["name"], answers.get("title") or "", "delegate"
    else:
        person = ctx.person
        email, name, title, role = person.email, person.name, person.title, _network_role(ctx)
    if meeting.chatham_house and answers.get("chatham") != "agree":
        raise UserError("meetings.chatham_needed")
    reg = await _enrol(ctx, meeting, person=person, member_id=member.id if member else None,
                       email=email, name=name, title=title, role=role, answers=answers)
    replies = [await _receipt(ctx, meeting, reg)]
    if person is not None and person.id != ctx.person.id:  # a delegate on the roster hears too
        await _tell(ctx, reg, meeting, f"meetings.notice_{reg.status}",
                    ics=reg.status == RegistrationStatus.CONFIRMED)
    return replies


async def _enrol(ctx: Context, meeting: Meeting, *, person: Person | None, member_id: int | None,
                 email: str, name: str, title: str, role: str, answers: dict[str, Any],
                 by_secretariat: bool = False) -> Registration:
    """Register one attendee, the meeting row locked: a seat, the waitlist, or pending."""
    existing = await store.registration(ctx.session, meeting.id, email)
    if existing is not None and existing.status in ACTIVE_REGISTRATION:
        own = ctx.person is not None and existing.email == ctx.person.email
        raise UserError("meetings.already", **view(ctx, meeting, existing),
                        attendee="" if own else existing.name)
    if member_id is not None and meeting.delegation_limit is not None and (
            await store.delegation_size(ctx.session, meeting.id, member_id)
            >= meeting.delegation_limit):
        member = await ctx.session.get(Member, member_id)
        raise UserError("meetings.delegation_full", **view(ctx, meeting),
                        member=member.name if member else "", limit=meeting.delegation_limit)
    if meeting.needs_approval and not by_secretariat:
        status = RegistrationStatus.PENDING
    elif await store.take_seat(ctx.session, meeting):
        status = RegistrationStatus.CONFIRMED
    else:
        status = RegistrationStatus.WAITLISTED
    reg = existing or Registration(meeting_id=meeting.id, email=email)
    reg.person_id = person.id if person else None
    reg.member_id = member_id
    reg.registered_by = ctx.person.id if ctx.person else None
    reg.name, reg.title, reg.role = name, title, role
    reg.delegation_role = answers.get("delegation_role") or "member"
    reg.accessibility = answers.get("accessibility") or ""
    reg.visa_letter = answers.get("visa_letter") == "yes"
    reg.dietary = answers.get("dietary") or ""
    reg.chatham_ack = answers.get("chatham") == "agree"
    reg.status = status
    reg.registered_at = ctx.now
    reg.decided_at = ctx.now if status == RegistrationStatus.CONFIRMED else None
    reg.cancelled_at = reg.attended_at = None
    if existing is None:
        ctx.session.add(reg)
    await ctx.session.flush()
    await ctx.session.refresh(reg, ["member"])
    await sync_meeting(ctx.session, meeting, ctx.now)
    await ctx.audit("registration.created", f"registration:{reg.id}", meeting=meeting.id,
                    status=status, member_id=member_id, by_secretariat=by_secretariat)
    if status == RegistrationStatus.PENDING:
        await ctx.notify_secretariat(Outgoing(
            "meetings.for_approval", {**view(ctx, meeting), **_registration_view(ctx, reg)},
            choices=(Choice(f"/participants {meeting.id} approve {reg.id}",
                            ctx.label("meetings.approve_button")),
                     Choice(f"/participants {meeting.id} reject {reg.id}",
                            ctx.label("meetings.reject_button"))),
            private=True))
    return reg


async def _waitlist_position(ctx: Context, reg: Registration) -> int:
    queue = await store.participants(ctx.session, reg.meeting_id,
                                     [RegistrationStatus.WAITLISTED])
    return next((n for n, r in enumerate(queue, 1) if r.id == reg.id), 0)


async def _receipt(ctx: Context, meeting: Meeting, reg: Registration) -> Outgoing:
    context = {**view(ctx, meeting, reg), "attendee": reg.name, "email": reg.email,
               "for_other": ctx.person is None or reg.person_id != ctx.person.id,
               "position": await _waitlist_position(ctx, reg)}
    file = (calendar_file(ctx, meeting, reg) if reg.status == RegistrationStatus.CONFIRMED
            else None)
    return Outgoing(f"meetings.registered_{reg.status}", context, file=file, closes_form=True,
                    private=True,
                    choices=(Choice("/myregistrations", ctx.label("meetings.mine_button")),))


# -- /unregister, /myregistrations -----------------------------------------------------------
async def unregister(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Cancel one's registration (or one of one's delegation's), once asked and confirmed.

    `/unregister 3 [EMAIL]` asks, naming the meeting and the attendee; its buttons send the
    same command with `confirm` (cancel it) or `keep` (nothing changes).
    """
    assert ctx.person is not None
    number, *words = msg.args.split() or [""]
    answer = words.pop().lower() if words and words[-1].lower() in ("confirm", "keep") else ""
    meeting_row = await _meeting(ctx, number, lock=True)
    email = (words[0] if words else ctx.person.email).lower()
    reg = await store.registration(ctx.session, meeting_row.id, email)
    if reg is None or reg.status not in ACTIVE_REGISTRATION:
        raise UserError("meetings.not_registered", **view(ctx, meeting_row), email=email)
    own_members = {m.id for m in ctx.own_members()}
    if not (reg.email == ctx.person.email or reg.person_id == ctx.person.id
            or reg.registered_by == ctx.person.id or ctx.is_secretariat
            or (reg.member_id is not None and reg.member_id in own_members)):
        raise UserError("meetings.not_yours", **view(ctx, meeting_row), email=email)
    if meeting_row.starts_at <= ctx.now:
        raise UserError("meetings.refused_past", **view(ctx, meeting_row))
    mine = reg.email == ctx.person.email
    about = {**view(ctx, meeting_row), "attendee": reg.name, "for_other": not mine}
    if answer == "keep":
        return [Outgoing("meetings.registration_kept", about, private=True)]
    if answer != "confirm":
        command = f"/unregister {meeting_row.id}" + ("" if mine else f" {reg.email}")
        return [Outgoing("meetings.unregister_confirm", about, private=True, choices=(
            Choice(f"{command} confirm", ctx.label("meetings.unregister_confirm_button",
                                                   for_other=not mine, attendee=reg.name)),
            Choice(f"{command} keep", ctx.label("meetings.keep_button"))))]
    was = reg.status
    reg.status = RegistrationStatus.CANCELLED
    reg.cancelled_at = ctx.now
    await ctx.session.flush()
    promoted: list[Registration] = []
    if was == RegistrationStatus.CONFIRMED:
        await store.free_seat(ctx.session, meeting_row)
        promoted = await store.promote_waitlisted(ctx.session, meeting_row, ctx.now)
    await sync_meeting(ctx.session, meeting_row, ctx.now)
    await ctx.audit("registration.cancelled", f"registration:{reg.id}", meeting=meeting_row.id,
                    was=was, promoted=[r.id for r in promoted])
    for p in promoted:
        await ctx.audit("registration.promoted", f"registration:{p.id}", meeting=meeting_row.id)
        await _tell(ctx, p, meeting_row, "meetings.promoted", ics=True)
    if not mine:  # someone else cancelled it: the attendee (or their focal point) hears
        recipient = await _recipient(ctx, reg)
        if recipient is not None and recipient.id != ctx.person.id:
            await _tell(ctx, reg, meeting_row, "meetings.cancelled_for_you",
                        ics=was == RegistrationStatus.CONFIRMED, cancel=True)
    file = (calendar_file(ctx, meeting_row, reg, cancel=True)
            if mine and was == RegistrationStatus.CONFIRMED else None)
    return [Outgoing("meetings.unregistered", {**view(ctx, meeting_row), "attendee": reg.name,
                                               "for_other": not mine,
                                               "promoted": len(promoted)},
                     file=file, private=True)]


async def my_registrations(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """List the caller's registrations and those they made for their delegation."""
    assert ctx.person is not None
    rows = await store.registered_by_or_for(ctx.session, ctx.person.id, ctx.person.email,
                                            [m.id for m in ctx.own_members()])
    items = [{**view(ctx, m), **_registration_view(ctx, r), "id": m.id,
              "own": r.email == ctx.person.email, "upcoming": m.starts_at > ctx.now}
             for r, m in rows]
    choices = tuple(Choice(f"/unregister {i['id']}" + ("" if i["own"] else f" {i['email']}"),
                           ctx.label("meetings.unregister_one", id=i["id"], name=i["name"]))
                    for i in items if i["upcoming"] and i["status_code"] in ACTIVE_REGISTRATION
                    and i["window"] != "cancelled")[:MAX_BUTTONS]
    return [Outgoing("meetings.mine", {"registrations": items}, choices=choices)]


# -- /participants (secretariat) -------------------------------------------------------------
def _count(rows: list[Registration], key: Any) -> list[dict[str, Any]]:
    counts: dict[str, int] = {}
    for r in rows:
        label = key(r)
        counts[label] = counts.get(label, 0) + 1
    return [{"label": k, "count": v} for k, v in sorted(counts.items(),
                                                       key=lambda kv: (-kv[1], kv[0]))]


async def participants(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Counts of a meeting's registrations; pending, csv, list, add, attended, approve, reject."""
    number, _, rest = msg.args.partition(" ")
    verb, _, arg = rest.strip().partition(" ")
    verb, arg = verb.lower(), arg.strip()
    row = await _meeting(ctx, number, lock=verb in ("add", "approve", "reject"))
    if verb == "":
        return [await _counts(ctx, row)]
    if verb == "pending":
        return [await _pending(ctx, row)]
    if verb == "csv":
        return [await _csv(ctx, row, everyone=arg.lower() == "all")]
    if verb == "list":
        return [await _attendance_list(ctx, row)]
    if verb == "add":
        return await _add(ctx, row, arg)
    if verb == "attended":
        return [await _attended(ctx, row, arg)]
    if verb in ("approve", "reject"):
        return [await _decide(ctx, row, arg, approve=verb == "approve")]
    raise UserError("meetings.participants_usage", id=row.id)


async def _counts(ctx: Context, row: Meeting) -> Outgoing:
    regs = [r for r in await store.participants(ctx.session, row.id)
            if r.status != RegistrationStatus.CANCELLED]
    confirmed = [r for r in regs if r.status == RegistrationStatus.CONFIRMED]
    none = ctx.label("meetings.no_member")
    pending = sum(1 for r in regs if r.status == RegistrationStatus.PENDING)
    choices = [Choice(f"/participants {row.id} csv", ctx.label("meetings.csv_button")),
               Choice(f"/participants {row.id} list", ctx.label("meetings.list_button"))]
    if pending:
        choices.insert(0, Choice(f"/participants {row.id} pending",
                                 ctx.label("meetings.pending_button", count=pending)))
    return Outgoing("meetings.counts", {
        **view(ctx, row), "total": len(regs),
        "by_status": _count(regs, lambda r: ctx.label(f"meetings.status_{r.status}")),
        "by_member": _count(confirmed, lambda r: r.member.name if r.member else none)[:15],
        "by_region": _count(confirmed, lambda r: r.member.region if r.member else none),
        "by_role": _count(confirmed, lambda r: ctx.label(f"meetings.role_{r.role or 'none'}")),
        "by_delegation_role": _count(
            confirmed, lambda r: ctx.label(f"meetings.delegation_{r.delegation_role}")),
        "attended": sum(1 for r in confirmed if r.attended_at is not None),
    }, choices=tuple(choices), private=True)


async def _pending(ctx: Context, row: Meeting) -> Outgoing:
    regs = await store.participants(ctx.session, row.id, [RegistrationStatus.PENDING])
    choices = tuple(c for r in regs[:MAX_BUTTONS // 2] for c in (
        Choice(f"/participants {row.id} approve {r.id}",
               ctx.label("meetings.approve_one", name=r.name)),
        Choice(f"/participants {row.id} reject {r.id}",
               ctx.label("meetings.reject_one", name=r.name))))
    return Outgoing("meetings.pending_list", {**view(ctx, row), "registrations": [
        _registration_view(ctx, r) for r in regs]}, choices=choices, private=True)


async def _attendance_list(ctx: Context, row: Meeting) -> Outgoing:
    regs = await store.participants(ctx.session, row.id, [RegistrationStatus.CONFIRMED])
    choices = tuple(Choice(f"/participants {row.id} attended {r.email}",
                           ctx.label("meetings.attended_button", name=r.name))
                    for r in regs if r.attended_at is None)[:MAX_BUTTONS]
    return Outgoing("meetings.attendance_list", {**view(ctx, row), "registrations": [
        _registration_view(ctx, r) for r in regs]}, choices=choices, private=True)


def _cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text, never runs as a formula (OWASP: prefix ')."""
    return "'" + value if value[:1] in FORMULA_STARTS else value


async def _csv(ctx: Context, row: Meeting, *, everyone: bool) -> Outgoing:
    statuses = None if everyone else [RegistrationStatus.CONFIRMED]
    regs = await store.participants(ctx.session, row.id, statuses)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(ctx.label("meetings.csv_columns").split("|"))
    yes, no = ctx.label("meetings.yes"), ctx.label("meetings.no")
    for r in regs:
        writer.writerow([_cell(v) for v in (
            r.name, r.email, r.title, r.member.name if r.member else "",
            r.member.region if r.member else "", ctx.label(f"meetings.role_{r.role or 'none'}"),
            ctx.label(f"meetings.delegation_{r.delegation_role}"),
            ctx.label(f"meetings.status_{r.status}"),
            r.registered_at.strftime("%Y-%m-%d %H:%M UTC"), yes if r.visa_letter else no,
            r.accessibility, r.dietary,
            r.attended_at.strftime("%Y-%m-%d %H:%M UTC") if r.attended_at else "",
        )])
    await ctx.audit("participants.exported", f"meeting:{row.id}", rows=len(regs),
                    everyone=everyone)
    file = OutFile(f"meeting-{row.id}-participants.csv", "text/csv",
                   out.getvalue().encode("utf-8-sig"))  # the BOM: Excel reads UTF-8
    return Outgoing("meetings.csv", {**view(ctx, row), "rows": len(regs), "everyone": everyone},
                    file=file, private=True)


async def _add(ctx: Context, row: Meeting, email: str) -> list[Outgoing]:
    """The secretariat adds someone of the roster, even after registration closed."""
    if not email or not forms.EMAIL.match(email):
        raise UserError("meetings.add_usage", id=row.id)
    if row.status == MeetingStatus.CANCELLED:
        raise UserError("meetings.refused_cancelled", **view(ctx, row))
    if row.ends_at <= ctx.now:
        raise UserError("meetings.refused_past", **view(ctx, row))
    person = await ctx.session.scalar(select(Person).where(Person.email == email.lower()))
    if person is None:
        raise UserError("meetings.unknown_person", email=email)
    member_roles = [r for r in person.roles if r.role in MEMBER_ROLES and r.member_id]
    held = {r.role for r in person.roles}
    role = next((str(r) for r in (RoleName.FOCAL_POINT, RoleName.ALTERNATE,
                                  RoleName.CIVIL_SOCIETY, *NETWORK_ROLES) if r in held), "")
    reg = await _enrol(ctx, row, person=person,
                       member_id=member_roles[0].member_id if member_roles else None,
                       email=person.email, name=person.name, title=person.title, role=role,
                       answers={}, by_secretariat=True)
    await _tell(ctx, reg, row, f"meetings.notice_{reg.status}",
                ics=reg.status == RegistrationStatus.CONFIRMED)
    return [Outgoing("meetings.added", {**view(ctx, row), **_registration_view(ctx, reg),
                                        "id": row.id}, private=True)]


async def _attended(ctx: Context, row: Meeting, email: str) -> Outgoing:
    reg = await store.registration(ctx.session, row.id, email) if email else None
    if reg is None or reg.status != RegistrationStatus.CONFIRMED:
        raise UserError("meetings.not_registered", **view(ctx, row), email=email or "?")
    if reg.attended_at is None:
        reg.attended_at = ctx.now
        await ctx.audit("registration.attended", f"registration:{reg.id}", meeting=row.id)
    return Outgoing("meetings.attended", {**view(ctx, row), **_registration_view(ctx, reg),
                                          "id": row.id}, private=True)


async def _decide(ctx: Context, row: Meeting, number: str, *, approve: bool) -> Outgoing:
    reg = await ctx.session.get(Registration, int(number)) if number.isdigit() else None
    if reg is None or reg.meeting_id != row.id:
        raise UserError("meetings.unknown_registration", id=number or "?")
    if reg.status != RegistrationStatus.PENDING:
        raise UserError("meetings.already_decided", name=reg.name,
                        status=ctx.label(f"meetings.status_{reg.status}"))
    if not approve:
        reg.status = RegistrationStatus.REJECTED
    elif await store.take_seat(ctx.session, row):
        reg.status = RegistrationStatus.CONFIRMED
    else:
        reg.status = RegistrationStatus.WAITLISTED
    reg.decided_at = ctx.now
    await ctx.session.flush()
    await sync_meeting(ctx.session, row, ctx.now)
    await ctx.audit("registration.approved" if approve else "registration.rejected",
                    f"registration:{reg.id}", meeting=row.id, status=reg.status)
    await _tell(ctx, reg, row, f"meetings.notice_{reg.status}",
                ics=reg.status == RegistrationStatus.CONFIRMED)
    return Outgoing("meetings.decided", {**view(ctx, row), **_registration_view(ctx, reg),
                                         "id": row.id}, private=True)


# -- the dashboard's part (Slack App Home) ---------------------------------------------------
async def dashboard_part(ctx: Context) -> tuple[list[dict[str, Any]], list[Choice]]:
    """Upcoming meetings for a person's dashboard, and a Register button for each open one."""
    assert ctx.person is not None
    rows = (await store.upcoming(ctx.session, ctx.now))[:5]
    mine = await store.registrations_for(ctx.session, [m.id for m in rows], [ctx.person.email])
    shown = [view(ctx, m, mine.get(m.id)) for m in rows]
    buttons = [Choice(f"/register {m['id']}", ctx.label("meetings.register_button", id=m["id"]))
               for m in shown if m["window"] == "open" and not m["mine"]
               and _may_register(ctx, next(r for r in rows if r.id == m["id"]))]
    return shown, buttons
