"""National action plans: each member's NAP status, kept by its focal points, with history.

`/nap` shows the caller's own members, `/nap <member>` anyone's, `/nap all` the whole Network by
region; `/nap update [member]` opens the form (focal points and alternates for their own
members, the secretariat for anyone); `/nap history <member>` lists the last changes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select

from handlers import forms
from handlers.context import Context
from handlers.forms import Field, Form
from handlers.network import find_member, member_by_code
from handlers.types import Choice, Incoming, Outgoing, UserError
from storage.models import Member, NapHistory, NapStage, NapStatus, Person

FIRST_YEAR = 2000  # resolution 1325; no plan on it is older
MAX_PLAN = 20
PLAN_BUTTONS = 4  # 1st to 4th plans are what the Network has seen
HISTORY_SHOWN = 10
REGIONAL = "Regional organizations"  # listed after the UN regional groups
YES, NO = "yes", "no"

STAGE_LABELS = {
    NapStage.NONE: "nap.stage_none",
    NapStage.IN_DEVELOPMENT: "nap.stage_in_development",
    NapStage.ADOPTED: "nap.stage_adopted",
}
PLAN = re.compile(r"(\d{1,2})(?:st|nd|rd|th)?", re.IGNORECASE)
YEAR = re.compile(r"\d{4}")


# -- reading ------------------------------------------------------------------------------
async def nap(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Show NAP status (own, a member's or all), a member's history, or open the update form."""
    verb, _, rest = msg.args.partition(" ")
    match verb.lower():
        case "":
            return await _own(ctx)
        case "all":
            return [await _network(ctx)]
        case "update":
            return await _update(ctx, rest.strip())
        case "history":
            return [await _history(ctx, rest.strip())]
    return [await status_of(ctx, await _member(ctx, msg.args))]


async def _member(ctx: Context, text: str) -> Member:
    member = await find_member(ctx.session, text)
    if member is None:
        raise UserError("nap.unknown_member", text=text)
    return member


async def _own(ctx: Context) -> list[Outgoing]:
    members = ctx.own_members()
    if not members:
        return [Outgoing("nap.hint", choices=(Choice("/nap all", ctx.label("nap.all_button")),))]
    return [await status_of(ctx, m) for m in members]


async def status_of(ctx: Context, member: Member, *, saved: bool = False) -> Outgoing:
    """A member's NAP status, with Update (for those who may act for it) and History."""
    status = await ctx.session.get(NapStatus, member.id)
    may_update = ctx.may_act_for(member)
    buttons = [Choice(f"/nap history {member.code}", ctx.label("nap.history_button"))]
    if may_update:
        buttons.insert(0, Choice(f"/nap update {member.code}", ctx.label("nap.update_button")))
    return Outgoing(
        "nap.status",
        {"member": member.name, "saved": saved, "may_update": may_update,
         **await _described(ctx, status)},
        choices=tuple(buttons),
    )


async def _described(ctx: Context, status: NapStatus | None) -> dict[str, Any]:
    if status is None:
        return {"recorded": False}
    by = await ctx.session.get(Person, status.updated_by) if status.updated_by else None
    return {
        "recorded": True,
        "stage": _stage(ctx, status.stage, status.plan_number, status.year_adopted),
        "under_review": status.under_review,
        "has_indicators": status.has_indicators,
        "has_budget": status.has_budget,
        "updated": _local_date(ctx, status.updated_at),
        "by": by.name if by else "",
    }


def _stage(ctx: Context, stage: str, plan: int | None, year: int | None,
           *, short: bool = False) -> str:
    """`2nd NAP (adopted 2016)`, `NAP in development`, `No NAP`; shorter for lists."""
    return ctx.label("nap.stage_short" if short else "nap.stage", stage=stage,
                     plan=ctx.label("nap.ordinal", n=plan) if plan else "", year=year or "")


def _local_date(ctx: Context, at: datetime) -> date:
    """The day `at` fell on where the caller lives."""
    tz = ctx.person.timezone if ctx.person else ctx.config.timezone
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return at.astimezone(zone).date()


async def _network(ctx: Context) -> Outgoing:
    """Every member's status by region, compact enough for one message."""
    rows = await ctx.session.execute(
        select(Member, NapStatus)
        .outerjoin(NapStatus, NapStatus.member_id == Member.id)
        .order_by(Member.name)
    )
    regions: dict[str, dict[str, Any]] = {}
    for member, status in rows:
        region = regions.setdefault(
            member.region,
            {"name": member.region, "members": 0, "adopted": 0, "developing": 0,
             "listed": [], "unrecorded": 0},
        )
        region["members"] += 1
        if status is None:
            region["unrecorded"] += 1
            continue
        region["adopted"] += int(status.stage == NapStage.ADOPTED)
        region["developing"] += int(status.stage == NapStage.IN_DEVELOPMENT)
        region["listed"].append({
            "name": member.name,
            "stage": _stage(ctx, status.stage, status.plan_number, status.year_adopted,
                            short=True),
        })
    ordered = sorted(regions.values(), key=lambda r: (r["name"] == REGIONAL, r["name"]))
    return Outgoing(
        "nap.all",
        {
            "regions": ordered,
            "total": sum(r["members"] for r in ordered),
            "adopted": sum(r["adopted"] for r in ordered),
            "developing": sum(r["developing"] for r in ordered),
            "unrecorded": sum(r["unrecorded"] for r in ordered),
        },
    )


async def _history(ctx: Context, text: str) -> Outgoing:
    """The last changes to a member's status, newest first."""
    if text:
        member = await _member(ctx, text)
    else:
        own = ctx.own_members()
        if len(own) != 1:
            raise UserError("nap.history_usage")
        member = own[0]
    rows = await ctx.session.execute(
        select(NapHistory, Person.name)
        .outerjoin(Person, Person.id == NapHistory.changed_by)
        .where(NapHistory.member_id == member.id)
        .order_by(NapHistory.changed_at.desc(), NapHistory.id.desc())
        .limit(HISTORY_SHOWN)
    )
    total = await ctx.session.scalar(
        select(func.count()).select_from(NapHistory).where(NapHistory.member_id == member.id)
    )
    return Outgoing(
        "nap.history",
        {
            "member": member.name,
            "total": total or 0,
            "changes": [
                {"date": _local_date(ctx, h.changed_at),
                 "stage": _stage(ctx, h.stage, h.plan_number, h.year_adopted),
                 "under_review": h.under_review, "has_indicators": h.has_indicators,
                 "has_budget": h.has_budget, "by": name or ""}
                for h, name in rows
            ],
        },
    )


# -- updating -----------------------------------------------------------------------------
async def _update(ctx: Context, text: str) -> list[Outgoing]:
    """Open the NAP form for a member the caller may act for."""
    if text:
        member = await _member(ctx, text)
    else:
        own = ctx.own_members()
        if not own:
            raise UserError("nap.update_usage")
        if len(own) > 1:
            return [Outgoing("nap.which_member",
                             choices=tuple(Choice(f"/nap update {m.code}", m.name) for m in own))]
        member = own[0]
    if not ctx.may_act_for(member):
        raise UserError("nap.not_yours", member=member.name)
    status = await ctx.session.get(NapStatus, member.id)
    described = await _described(ctx, status)
    return [
        Outgoing("nap.update_intro", {"member": member.name, "recorded": described["recorded"],
                                      "stage": described.get("stage", "")}, private=True),
        await forms.start(ctx, NAP_FORM, _prefill(member, status)),
    ]


def _prefill(member: Member, status: NapStatus | None) -> dict[str, Any]:
    """The form's answers to start from: the member (kept for submit) and what is recorded."""
    answers: dict[str, Any] = {"member": member.code}
    if status is not None:
        answers |= {
            "stage": status.stage,
            "plan_number": str(status.plan_number or ""),
            "year_adopted": str(status.year_adopted or ""),
            "under_review": YES if status.under_review else NO,
            "has_indicators": YES if status.has_indicators else NO,
            "has_budget": YES if status.has_budget else NO,
        }
    return answers


async def _stages(ctx: Context, answers: dict[str, Any]) -> Sequence[Choice]:
    return [Choice(stage, ctx.label(key)) for stage, key in STAGE_LABELS.items()]


async def _plans(ctx: Context, answers: dict[str, Any]) -> Sequence[Choice]:
    # Button n answers n, so a typed number means the same whether read as a value or a position.
    return [Choice(str(n), ctx.label("nap.ordinal", n=n)) for n in range(1, PLAN_BUTTONS + 1)]


async def _yes_no(ctx: Context, answers: dict[str, Any]) -> Sequence[Choice]:
    return [Choice(YES, ctx.label("nap.yes")), Choice(NO, ctx.label("nap.no"))]


async def _plan_number(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    match = PLAN.fullmatch(value.replace(" ", ""))
    if match is None or not 1 <= int(match[1]) <= MAX_PLAN:
        raise UserError("nap.bad_plan_number", limit=MAX_PLAN)
    return str(int(match[1]))


async def _year(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    if not YEAR.fullmatch(value) or not FIRST_YEAR <= int(value) <= ctx.now.year:
        raise UserError("nap.bad_year", first=FIRST_YEAR, last=ctx.now.year)
    return value


async def _adopted_is_complete(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    """An adopted plan has a number and a year (checked on the first question that follows
    them and cannot be skipped, as a skipped answer is never validated)."""
    if answers.get("stage") == NapStage.ADOPTED and not (
        answers.get("plan_number") and answers.get("year_adopted")
    ):
        raise UserError("nap.adopted_incomplete")
    return value


async def _submit(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    """Save the new status and a history row; the reply shows the status as saved."""
    if not answers.get("member"):
        raise UserError("nap.form_lost")
    member = await member_by_code(ctx.session, str(answers["member"]))
    if not ctx.may_act_for(member):
        raise UserError("nap.not_yours", member=member.name)
    # One update at a time per member: the second waits, then sees the first's row.
    await ctx.session.execute(select(Member.id).where(Member.id == member.id).with_for_update())
    adopted = answers["stage"] == NapStage.ADOPTED
    values: dict[str, Any] = {
        "stage": answers["stage"],
        "plan_number": int(answers["plan_number"]) if adopted else None,
        "year_adopted": int(answers["year_adopted"]) if adopted else None,
        "under_review": answers["under_review"] == YES,
        "has_indicators": answers["has_indicators"] == YES,
        "has_budget": answers["has_budget"] == YES,
    }
    by = ctx.person.id if ctx.person else None
    status = await ctx.session.scalar(select(NapStatus).where(NapStatus.member_id == member.id))
    if status is None:
        status = NapStatus(member_id=member.id)
        ctx.session.add(status)
    for name, value in values.items():
        setattr(status, name, value)
    status.updated_at, status.updated_by = ctx.now, by
    ctx.session.add(NapHistory(member_id=member.id, changed_at=ctx.now, changed_by=by, **values))
    await ctx.session.flush()
    await ctx.audit("nap.updated", f"member:{member.code}", **values)
    saved = await status_of(ctx, member, saved=True)
    return [Outgoing(saved.key, saved.context, saved.choices, closes_form=True)]


NAP_FORM = Form(
    name="nap",
    title="nap.form_title",
    fields=(
        Field("stage", "nap.ask_stage", kind="choice", choices=_stages),
        Field("plan_number", "nap.ask_plan", required=False, max_length=8, choices=_plans,
              validate=_plan_number, hint="nap.ask_plan_hint"),
        Field("year_adopted", "nap.ask_year", required=False, max_length=8, validate=_year,
              hint="nap.ask_year_hint"),
        Field("under_review", "nap.ask_review", kind="choice", choices=_yes_no,
              validate=_adopted_is_complete),
        Field("has_indicators", "nap.ask_indicators", kind="choice", choices=_yes_no),
        Field("has_budget", "nap.ask_budget", kind="choice", choices=_yes_no),
    ),
    submit=_submit,
    submit_label="nap.form_submit",
)
