"""Joining the bot: invitation codes, membership requests, linking a second platform account."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from handlers import forms
from handlers.context import Context
from handlers.forms import Field, Form
from handlers.network import find_member, member_by_code
from handlers.types import Choice, Incoming, Outgoing, UserError
from storage.invitations import code_hash, create_invitation
from storage.models import Identity, Invitation, MembershipRequest, Person, Role, RoleName
from storage.outbox import resume_waiting
from storage.roster import REGIONS, add_member

NEW_MEMBER = "new:"  # the membership form's answer for a member not yet in the Network


async def issue_code(ctx: Context, person: Person, purpose: str) -> tuple[str, Invitation]:
    """Create a one-time code for `person`."""
    ttl = ctx.config.invite_ttl if purpose == "invite" else ctx.config.link_ttl
    return await create_invitation(ctx.session, person.id, purpose, now=ctx.now, ttl=ttl,
                                   created_by=ctx.person.id if ctx.person else None)


async def bind_identity(ctx: Context, person: Person) -> Identity:
    """Attach the caller's platform account to `person`."""
    inc = ctx.incoming
    identity = Identity(
        person_id=person.id,
        platform=inc.platform,
        user_id=inc.user_id,
        chat_id=inc.chat_id if inc.private else "",
        display_name=inc.display_name[:120],
        created_at=ctx.now,
    )
    ctx.session.add(identity)
    await ctx.session.flush()
    await ctx.session.refresh(person, ["identities"])
    await resume_waiting(ctx.session, inc.platform, inc.user_id, ctx.now)
    return identity


def _roles(person: Person) -> list[dict[str, str]]:
    return [
        {"role": r.role, "member": r.member.name if r.member else ""}
        for r in sorted(person.roles, key=lambda r: (r.role, r.member_id or 0))
    ]


async def redeem(ctx: Context, code: str) -> list[Outgoing]:
    """Use an invitation or link code: bind the caller's account to the person it names."""
    invitation = await ctx.session.scalar(
        select(Invitation).where(Invitation.code_hash == code_hash(code))
    )
    if invitation is None:
        raise UserError("onboarding.code_unknown")
    if invitation.used_at is not None:
        raise UserError("onboarding.code_used")
    if invitation.expires_at <= ctx.now:
        raise UserError("onboarding.code_expired", expired=invitation.expires_at)
    person = await ctx.session.get(Person, invitation.person_id)
    assert person is not None
    if ctx.person is not None:
        if ctx.person.id == person.id:
            raise UserError("onboarding.already_linked", name=person.name)
        raise UserError("onboarding.account_taken", name=ctx.person.name)
    used = await ctx.session.execute(
        update(Invitation).where(Invitation.id == invitation.id, Invitation.used_at.is_(None))
        .values(used_at=ctx.now, used_by=f"{ctx.incoming.platform}:{ctx.incoming.user_id}")
    )
    if not getattr(used, "rowcount", 0):  # redeemed at this very moment by someone else
        raise UserError("onboarding.code_used")
    await bind_identity(ctx, person)
    ctx.person = person
    await ctx.audit(
        "identity.bound", f"person:{person.id}",
        platform=ctx.incoming.platform, via=invitation.purpose,
    )
    key = "onboarding.welcome" if invitation.purpose == "invite" else "onboarding.linked"
    return [
        Outgoing(
            key,
            {"name": person.name, "roles": _roles(person), "platform": ctx.incoming.platform},
        )
    ]


async def start(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Redeem a code, greet a known person, or open the membership request form."""
    if msg.args:
        return await redeem(ctx, msg.args)
    if ctx.person is not None:
        return [Outgoing("onboarding.known", {"name": ctx.person.name, "roles": _roles(ctx.person)})]
    pending = await ctx.session.scalar(
        select(MembershipRequest).where(
            MembershipRequest.platform == msg.platform,
            MembershipRequest.user_id == msg.user_id,
            MembershipRequest.status == "pending",
        )
    )
    if pending is not None:
        return [Outgoing("onboarding.request_pending", {"id": pending.id,
                                                        "member": pending.member_name})]
    return [Outgoing("onboarding.hello"), await forms.start(ctx, MEMBERSHIP_FORM)]


async def link(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Give a one-time code that binds another platform account to the caller."""
    if msg.args:
        return await redeem(ctx, msg.args)
    assert ctx.person is not None
    code, invitation = await issue_code(ctx, ctx.person, "link")
    await ctx.audit("link.issued", f"person:{ctx.person.id}")
    return [
        Outgoing(
            "onboarding.link_code",
            {"one_time_code": code, "minutes": int(ctx.config.link_ttl.total_seconds() // 60)},
            private=True,
        )
    ]


async def invite(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Issue an invitation code for a person already on the roster (secretariat)."""
    email = msg.args.strip().lower()
    if not email:
        raise UserError("onboarding.invite_usage")
    person = await ctx.session.scalar(select(Person).where(Person.email == email))
    if person is None:
        raise UserError("onboarding.invite_unknown_person", email=email)
    code, invitation = await issue_code(ctx, person, "invite")
    await ctx.audit("invitation.issued", f"person:{person.id}")
    return [
        Outgoing(
            "onboarding.invite_code",
            {"one_time_code": code, "name": person.name, "email": person.email,
             "expires": invitation.expires_at},
            private=True,
        )
    ]


def new_member(answers: dict[str, Any]) -> str:
    """The name of the new member a membership form asks for; "" for one of the Network's."""
    value = str(answers.get("member") or "")
    return value.removeprefix(NEW_MEMBER) if value.startswith(NEW_MEMBER) else ""


async def _member_or_new(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    """Form validator: a member of the Network (its code), or the name of a new member."""
    name = " ".join(value.removeprefix(NEW_MEMBER).split())
    member = await find_member(ctx.session, name)
    if member is not None:
        return member.code
    if sum(ch.isalpha() for ch in name) < 2:
        raise UserError("onboarding.bad_member_name", text=name)
    return NEW_MEMBER + name


async def _regions(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice(key, ctx.label(f"onboarding.region_{key}")) for key in REGIONS]


def _request_details(ctx: Context, request: MembershipRequest) -> dict[str, Any]:
    """What the messages about a request say of its member."""
    region = request.new_member_region if request.member_id is None else ""
    return {"member": request.member_name, "new_member": request.member_id is None,
            "region": ctx.label(f"onboarding.region_{region}") if region in REGIONS else ""}


async def _submit_request(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    inc = ctx.incoming
    name = new_member(answers)
    member = None if name else await member_by_code(ctx.session, answers["member"])
    request = MembershipRequest(
        platform=inc.platform,
        user_id=inc.user_id,
        chat_id=inc.chat_id,
        member_id=member.id if member else None,
        new_member=name,
        new_member_region=answers.get("region", "") if name else "",
        name=answers["name"],
        title=answers["title"],
        ministry=answers["ministry"],
        email=answers["email"],
        created_at=ctx.now,
    )
    ctx.session.add(request)
    await ctx.session.flush()
    await ctx.session.refresh(request, ["member"])
    await ctx.audit("membership.requested", f"request:{request.id}",
                    member=member.code if member else "", new_member=name)
    known = await ctx.session.scalar(select(Person).where(Person.email == request.email))
    details = _request_details(ctx, request)
    told = await ctx.notify_secretariat(
        Outgoing(
            "onboarding.request_for_secretariat",
            {"id": request.id, "name": request.name, "title": request.title,
             "ministry": request.ministry, "email": request.email, **details,
             "platform": inc.platform, "known_as": known.name if known else ""},
            choices=(
                Choice(f"/requests approve {request.id}", ctx.label("onboarding.approve_button")),
                Choice(f"/requests reject {request.id}", ctx.label("onboarding.reject_button")),
            ),
            private=True,
        )
    )
    return [
        Outgoing(
            "onboarding.request_received",
            {"id": request.id, **details, "secretariat_told": told > 0},
            closes_form=True,
        )
    ]


MEMBERSHIP_FORM = Form(
    name="membership",
    title="onboarding.form_title",
    fields=(
        Field("member", "onboarding.ask_member", validate=_member_or_new, max_length=120,
              hint="onboarding.ask_member_hint"),
        Field("region", "onboarding.ask_region", kind="choice", choices=_regions,
              hint="onboarding.ask_region_hint", only_if=lambda a: bool(new_member(a)),
              context=lambda a: {"member": new_member(a)}),
        Field("name", "onboarding.ask_name", max_length=120),
        Field("title", "onboarding.ask_title", max_length=120),
        Field("ministry", "onboarding.ask_ministry", max_length=200),
        Field("email", "onboarding.ask_email", kind="email", max_length=254),
    ),
    submit=_submit_request,
    submit_label="onboarding.form_submit",
)


async def requests(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """List pending membership requests, or approve or reject one (secretariat)."""
    verb, _, rest = msg.args.partition(" ")
    verb = verb.lower()
    if not verb:
        pending = list(
            await ctx.session.scalars(
                select(MembershipRequest)
                .where(MembershipRequest.status == "pending")
                .order_by(MembershipRequest.created_at, MembershipRequest.id)
            )
        )
        return [
            Outgoing(
                "onboarding.requests_list",
                {"requests": [
                    {"id": r.id, "name": r.name, "title": r.title, "ministry": r.ministry,
                     "email": r.email, **_request_details(ctx, r), "created": r.created_at}
                    for r in pending
                ]},
                choices=tuple(
                    c
                    for r in pending[:10]
                    for c in (
                        Choice(f"/requests approve {r.id}",
                               ctx.label("onboarding.approve_n_button", id=r.id)),
                        Choice(f"/requests reject {r.id}",
                               ctx.label("onboarding.reject_n_button", id=r.id)),
                    )
                ),
                private=True,
            )
        ]
    number, _, reason = rest.strip().partition(" ")
    if verb not in ("approve", "reject") or not number.isdigit():
        raise UserError("onboarding.requests_usage")
    request = await ctx.session.scalar(
        select(MembershipRequest).where(MembershipRequest.id == int(number))
        .with_for_update(of=MembershipRequest)
    )
    if request is None:
        raise UserError("onboarding.request_unknown", id=number)
    if request.status != "pending":
        raise UserError("onboarding.request_decided", id=request.id, status=request.status)
    request.decided_at = ctx.now
    request.decided_by = ctx.person.id if ctx.person else None
    request.reason = reason.strip()
    if verb == "reject":
        request.status = "rejected"
        await ctx.audit("membership.rejected", f"request:{request.id}", reason=request.reason)
        await ctx.notify(
            Outgoing("onboarding.request_rejected",
                     {"member": request.member_name, "reason": request.reason}),
            platform=request.platform, chat_id=request.chat_id,
        )
        return [Outgoing("onboarding.rejected_done", {"id": request.id, "name": request.name})]
    known = await ctx.session.scalar(select(Person).where(Person.email == request.email))
    if known is not None:  # never hand an existing person's account to whoever typed the e-mail
        raise UserError("onboarding.email_belongs_to", id=request.id, email=request.email,
                        name=known.name)
    request.status = "approved"
    details = _request_details(ctx, request)
    if request.member_id is None:  # a new member: it joins the Network with its focal point
        member = await add_member(ctx.session, request.new_member, request.new_member_region)
        request.member_id = member.id
        await ctx.audit("member.added", f"member:{member.code}", request=request.id,
                        region=member.region)
    person = await _approve(ctx, request)
    await ctx.audit("membership.approved", f"request:{request.id}", person=person.id)
    await ctx.notify(
        Outgoing("onboarding.request_approved", {**details, "name": person.name}),
        person=person,
    )
    return [Outgoing("onboarding.approved_done", {"id": request.id, "name": person.name,
                                                  **details})]


async def _approve(ctx: Context, request: MembershipRequest) -> Person:
    """Create the person, grant the focal point role and bind the requesting account."""
    person = Person(name=request.name, email=request.email, title=request.title,
                    ministry=request.ministry, created_at=ctx.now)
    ctx.session.add(person)
    await ctx.session.flush()
    ctx.session.add(Role(person_id=person.id, member_id=request.member_id,
                         role=RoleName.FOCAL_POINT))
    owner = await ctx.session.scalar(
        select(Identity).where(Identity.platform == request.platform,
                               Identity.user_id == request.user_id)
    )
    if owner is None:
        ctx.session.add(Identity(person_id=person.id, platform=request.platform,
                                 user_id=request.user_id, chat_id=request.chat_id,
                                 display_name=request.name, created_at=ctx.now))
    await ctx.session.flush()
    await ctx.session.refresh(person, ["roles", "identities"])
    return person
