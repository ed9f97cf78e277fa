"""Joining the bot: invitation codes, membership requests, linking a second platform account."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from handlers import forms
from handlers.context import Context
from handlers.forms import Field, Form
from handlers.network import close_member, find_member, member_by_code
from handlers.types import Choice, Incoming, Outgoing, UserError
from storage.invitations import code_hash, create_invitation
from storage.models import Identity, Invitation, MembershipRequest, Person, Role, RoleName
from storage.outbox import resume_waiting
from storage.roster import REGIONS, add_member

NEW_MEMBER = "new:"  # the membership form's answer for a member not yet in the Network
# ...and for a name close to a member's: "maybe:<code>\t<member name>\t<name typed>",
# followed by the question "Did you mean <member>?" (its answer: the code, or NEW).
MAYBE = "maybe:"
NEW = "new"


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


async def redeem(ctx: Context, code: str, *, command: str = "start") -> list[Outgoing]:
    """Use an invitation or link code: bind the caller's account to the person it names.

    `command` is the one used: a wrong code given to /link is a link code, which comes from
    the person's own other account, not from the secretariat.
    """
    invitation = await ctx.session.scalar(
        select(Invitation).where(Invitation.code_hash == code_hash(code))
    )
    if invitation is None:
        if command == "link":
            raise UserError("onboarding.link_code_unknown",
                            minutes=int(ctx.config.link_ttl.total_seconds() // 60))
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


async def pending_request(ctx: Context) -> MembershipRequest | None:
    """The caller's account's membership request still waiting for the secretariat, if any."""
    return await ctx.session.scalar(
        select(MembershipRequest).where(
            MembershipRequest.platform == ctx.incoming.platform,
            MembershipRequest.user_id == ctx.incoming.user_id,
            MembershipRequest.status == "pending",
        ).order_by(MembershipRequest.id.desc()).limit(1)
    )


async def start(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Redeem a code, greet a known person, or open the membership request form."""
    if msg.args:
        return await redeem(ctx, msg.args)
    if ctx.person is not None:
        return [Outgoing("onboarding.known", {"name": ctx.person.name, "roles": _roles(ctx.person)})]
    pending = await pending_request(ctx)
    if pending is not None:
        return [Outgoing("onboarding.request_pending", {"id": pending.id,
                                                        "member": pending.member_name})]
    return [Outgoing("onboarding.hello"), await forms.start(ctx, MEMBERSHIP_FORM)]


async def link(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Give a one-time code that binds another platform account to the caller."""
    if msg.args:
        return await redeem(ctx, msg.args, command="link")
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


def _maybe(answers: dict[str, Any]) -> tuple[str, str, str] | None:
    """(code, member name, name typed) when the typed name is close to a member's."""
    value = str(answers.get("member") or "")
    if not value.startswith(MAYBE):
        return None
    code, name, typed = value.removeprefix(MAYBE).split("\t", 2)
    return code, name, typed


def new_member(answers: dict[str, Any]) -> str:
    """The name of the new member a membership form asks for; "" for one of the Network's."""
    value = str(answers.get("member") or "")
    if value.startswith(NEW_MEMBER):
        return value.removeprefix(NEW_MEMBER)
    maybe = _maybe(answers)
    return maybe[2] if maybe and answers.get("meant") == NEW else ""


def _member_code(answers: dict[str, Any]) -> str:
    """The code of the Network's member a membership form names (after "Did you mean")."""
    return str(answers["meant"] if _maybe(answers) else answers["member"])


async def _member_or_new(ctx: Context, value: str, answers: dict[str, Any]) -> str:
    """Form validator: a member of the Network (its code), or the name of a new member.

    A name close to a member's ("Chlie") is asked about first: "Did you mean Chile?" (step by
    step, the next question; in a modal, an error unless a region for a new member is given).
    """
    name = " ".join(value.removeprefix(NEW_MEMBER).split())
    member = await find_member(ctx.session, name)
    if member is not None:
        return member.code
    if sum(ch.isalpha() for ch in name) < 2:
        raise UserError("onboarding.bad_member_name", text=name)
    close = None if value.startswith(NEW_MEMBER) else await close_member(ctx.session, name)
    if close is not None:
        whole = ctx.incoming.values
        if whole is None:
            return f"{MAYBE}{close.code}\t{close.name}\t{name}"
        if not whole.get("region"):
            raise UserError("onboarding.did_you_mean_modal", text=name, member=close.name)
    return NEW_MEMBER + name


async def _meant_choices(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    maybe = _maybe(answers)
    if maybe is None:
        return []
    code, name, typed = maybe
    return [Choice(code, name), Choice(NEW, ctx.label("onboarding.meant_new", text=typed))]


def _meant_context(answers: dict[str, Any]) -> dict[str, Any]:
    maybe = _maybe(answers)
    return {"member": maybe[1], "text": maybe[2]} if maybe else {"member": "", "text": ""}


async def _regions(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice(key, ctx.label(f"onboarding.region_{key}")) for key in REGIONS]


def _request_details(ctx: Context, request: MembershipRequest) -> dict[str, Any]:
    """What the messages about a request say of its member."""
    region = request.new_member_region if request.member_id is None else ""
    return {"member": request.member_name, "new_member": request.member_id is None,
            "region": ctx.label(f"onboarding.region_{region}") if region in REGIONS else ""}


async def _serving(ctx: Context, member_id: int | None) -> dict[str, str]:
    """Who speaks for a member now, for the secretariat deciding on a request for it:
    `{"serving": "focal point X and alternate Y"}`, "" when nobody (or a new member)."""
    serving: dict[str, list[str]] = {"focal_points": [], "alternates": []}
    if member_id is None:
        return {"serving": ""}
    rows = await ctx.session.execute(
        select(Role.role, Person.name).join(Person, Person.id == Role.person_id)
        .where(Role.member_id == member_id,
               Role.role.in_([RoleName.FOCAL_POINT, RoleName.ALTERNATE]))
        .order_by(Role.role, Person.name)
    )
    for role, name in rows:
        serving["focal_points" if role == RoleName.FOCAL_POINT else "alternates"].append(name)
    if not serving["focal_points"] and not serving["alternates"]:
        return {"serving": ""}
    return {"serving": ctx.label("onboarding.serving", **serving)}


async def _submit_request(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    inc = ctx.incoming
    name = new_member(answers)
    member = None if name else await member_by_code(ctx.session, _member_code(answers))
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
             **await _serving(ctx, request.member_id), "platform": inc.platform,
             "known_as": known.name if known else ""},
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
        Field("meant", "onboarding.ask_meant", kind="choice", choices=_meant_choices,
              only_if=lambda a: _maybe(a) is not None, context=_meant_context,
              steps_only=True),
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
                     "email": r.email, **_request_details(ctx, r), "created": r.created_at,
                     **await _serving(ctx, r.member_id)}
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
    serving = await _serving(ctx, request.member_id)  # before the new focal point joins them
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
                                                  **details, **serving})]


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
