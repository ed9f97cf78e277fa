"""Onboarding: invitation codes, membership requests and their review, linking accounts."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from handlers.clock import FrozenClock
from handlers.dispatch import Core
from storage.db import Database
from storage.invitations import code_hash, create_invitation
from storage.models import AuditEntry, Identity, Invitation, OutboxItem, Person
from tests.conftest import COORDINATOR, FP_CHILE, Transcript

TG_USER = "7001"


async def invite(db: Database, clock: FrozenClock, email: str, *, days: int = 14) -> str:
    async with db.transaction() as session:
        person = await session.scalar(select(Person).where(Person.email == email))
        assert person is not None
        code, _ = await create_invitation(session, person.id, "invite", now=clock.now(),
                                          ttl=timedelta(days=days))
    return code


async def test_an_invitation_code_binds_the_account(chat: Transcript, demo_db: Database,
                                                    clock: FrozenClock) -> None:
    code = await invite(demo_db, clock, FP_CHILE)
    await chat.say(f"/start {code.lower()}", as_=TG_USER, platform="telegram",
                   display_name="Catalina")
    assert chat.keys == ["onboarding.welcome"]
    assert "Focal point of Chile" in chat.text()
    await chat.say("/whoami", as_=TG_USER, platform="telegram")
    assert chat.last().context["email"] == FP_CHILE
    async with demo_db.transaction() as session:
        audit = await session.scalar(select(AuditEntry).where(AuditEntry.action == "identity.bound"))
        assert audit is not None and audit.details["platform"] == "telegram"


async def test_a_code_works_once(chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    code = await invite(demo_db, clock, FP_CHILE)
    await chat.say(f"/start {code}", as_=TG_USER, platform="telegram")
    await chat.say(f"/start {code}", as_="7002", platform="telegram")
    assert chat.keys == ["onboarding.code_used"]
    async with demo_db.transaction() as session:
        count = await session.scalar(select(func.count()).select_from(Identity)
                                     .where(Identity.platform == "telegram"))
    assert count == 1


async def test_an_expired_code_is_refused_with_its_date(chat: Transcript, demo_db: Database,
                                                        clock: FrozenClock) -> None:
    code = await invite(demo_db, clock, FP_CHILE, days=1)
    clock.advance(days=2)
    await chat.say(f"/start {code}", as_=TG_USER, platform="telegram")
    assert chat.keys == ["onboarding.code_expired"]
    assert "expired on 2 March 2018" in chat.text()


async def test_a_made_up_code_is_refused(chat: Transcript) -> None:
    await chat.say("/start ZZZZ-ZZZZ", as_=TG_USER, platform="telegram")
    assert chat.keys == ["onboarding.code_unknown"]


async def test_codes_are_stored_only_as_hashes(chat: Transcript, demo_db: Database) -> None:
    await chat.say(f"/invite {FP_CHILE}", as_=COORDINATOR)
    code = chat.last().context["one_time_code"]
    async with demo_db.transaction() as session:
        stored = list(await session.scalars(select(Invitation.code_hash)))
    assert stored == [code_hash(code)] and code not in stored[0]


async def test_invite_needs_a_person_on_the_roster(chat: Transcript) -> None:
    await chat.say("/invite nobody@example.org", as_=COORDINATOR)
    assert chat.keys == ["onboarding.invite_unknown_person"]
    await chat.say("/invite", as_=COORDINATOR)
    assert chat.keys == ["onboarding.invite_usage"]


async def _request_membership(chat: Transcript, user: str = TG_USER) -> None:
    await chat.say("/start", as_=user, platform="telegram")
    assert chat.keys == ["onboarding.hello", "forms.question"]
    for answer in ("Uruguay", "Ana Pérez", "Director of Human Rights",
                   "Ministry of Foreign Affairs", "ana.perez@mrree.example.org"):
        await chat.say(answer, as_=user, platform="telegram")


async def test_a_membership_request_reaches_the_secretariat_and_is_approved(
    chat: Transcript, demo_db: Database
) -> None:
    await _request_membership(chat)
    assert chat.keys == ["onboarding.request_received"]
    request_id = chat.last().context["id"]
    async with demo_db.transaction() as session:
        notices = list(await session.scalars(select(OutboxItem)))
    assert len(notices) == 1 and notices[0].message["key"] == "onboarding.request_for_secretariat"
    assert notices[0].message["context"]["member"] == "Uruguay"

    await chat.say("/start", as_=TG_USER, platform="telegram")
    assert chat.keys == ["onboarding.request_pending"]

    await chat.say("/requests", as_=COORDINATOR)
    assert [r["name"] for r in chat.last().context["requests"]] == ["Ana Pérez"]
    await chat.say(f"/requests approve {request_id}", as_=COORDINATOR)
    assert chat.keys == ["onboarding.approved_done"]

    await chat.say("/whoami", as_=TG_USER, platform="telegram")
    assert chat.keys == ["network.whoami"]
    assert chat.last().context["roles"] == [{"role": "focal_point", "member": "Uruguay"}]
    async with demo_db.transaction() as session:
        told = await session.scalar(select(OutboxItem).order_by(OutboxItem.id.desc()))
    assert told is not None and told.message["key"] == "onboarding.request_approved"

    await chat.say(f"/requests reject {request_id} too late", as_=COORDINATOR)
    assert chat.keys == ["onboarding.request_decided"]


async def test_a_rejected_requester_is_told_why_on_their_platform(
    chat: Transcript, demo_db: Database
) -> None:
    await _request_membership(chat)
    request_id = chat.last().context["id"]
    await chat.say(f"/requests reject {request_id} Please ask your ministry to nominate you",
                   as_=COORDINATOR)
    assert chat.keys == ["onboarding.rejected_done"]
    async with demo_db.transaction() as session:
        told = await session.scalar(select(OutboxItem).order_by(OutboxItem.id.desc()))
    assert told is not None
    assert (told.platform, told.chat_id, told.person_id) == ("telegram", TG_USER, None)
    assert told.message["context"]["reason"] == "Please ask your ministry to nominate you"
    await chat.say("/whoami", as_=TG_USER, platform="telegram")
    assert chat.keys == ["errors.not_registered"]


async def test_requests_refuses_bad_verbs_and_unknown_numbers(chat: Transcript) -> None:
    await chat.say("/requests approve", as_=COORDINATOR)
    assert chat.keys == ["onboarding.requests_usage"]
    await chat.say("/requests approve 999", as_=COORDINATOR)
    assert chat.keys == ["onboarding.request_unknown"]


async def test_link_and_invite_show_the_code_on_every_platform(chat: Transcript) -> None:
    await chat.say("/link", as_=FP_CHILE)
    code = chat.last().context["one_time_code"]
    assert f"Your link code is <code>{code}</code>." in chat.text(fmt="html")
    assert f"Your link code is `{code}`." in chat.text(fmt="mrkdwn")
    assert f"/start {code}" in chat.text() and "within 30 minutes" in chat.text()
    await chat.say(f"/invite {FP_CHILE}", as_=COORDINATOR)
    code = chat.last().context["one_time_code"]
    assert f"): <code>{code}</code>" in chat.text(fmt="html")
    assert f"They send /start {code} to the bot" in chat.text()


async def test_link_binds_a_second_platform_to_the_same_person(chat: Transcript) -> None:
    await chat.say("/link", as_=FP_CHILE)
    assert chat.keys == ["onboarding.link_code"]
    code = chat.last().context["one_time_code"]
    await chat.say(f"/start {code}", as_="T1/U42", platform="slack")
    assert chat.keys == ["onboarding.linked"]
    await chat.say("/whoami", as_="T1/U42", platform="slack")
    accounts = {a["platform"] for a in chat.last().context["accounts"]}
    assert accounts == {"console", "slack"}
    assert chat.last().context["email"] == FP_CHILE


async def test_a_linked_account_cannot_take_another_persons_code(chat: Transcript, demo_db: Database,
                                                                 clock: FrozenClock) -> None:
    code = await invite(demo_db, clock, "fp.germany@demo.invalid")
    await chat.say(f"/start {code}", as_=FP_CHILE)
    assert chat.keys == ["onboarding.account_taken"]
    await chat.say(f"/start {code}", as_=TG_USER, platform="telegram")
    assert chat.keys == ["onboarding.welcome"]


async def test_a_known_person_saying_start_is_greeted(chat: Transcript) -> None:
    await chat.say("/start", as_=FP_CHILE)
    assert chat.keys == ["onboarding.known"]
    assert "focal point of Chile" in chat.text()


async def test_the_console_cannot_speak_as_someone_off_the_roster(core: Core) -> None:
    assert await core.console_identity("nobody@example.org") is None


async def test_a_request_with_someone_elses_email_never_takes_their_account(
    chat: Transcript, demo_db: Database
) -> None:
    await chat.say("/start", as_="666", platform="telegram")
    for answer in ("Chile", "Mallory", "Adviser", "MFA", COORDINATOR):
        await chat.say(answer, as_="666", platform="telegram")
    request_id = chat.last().context["id"]
    async with demo_db.transaction() as session:
        notice = await session.scalar(select(OutboxItem))
    assert notice is not None and notice.message["context"]["known_as"] == "Amina Diallo (demo)"
    await chat.say(f"/requests approve {request_id}", as_=COORDINATOR)
    assert chat.keys == ["onboarding.email_belongs_to"]
    await chat.say("/whoami", as_="666", platform="telegram")
    assert chat.keys == ["errors.not_registered"]


async def test_one_code_redeemed_twice_at_once_binds_one_account(
    core: Core, demo_db: Database, clock: FrozenClock
) -> None:
    import asyncio

    from handlers.types import Incoming

    code = await invite(demo_db, clock, FP_CHILE)
    results = await asyncio.gather(*(
        core.handle(Incoming(platform="telegram", user_id=u, chat_id=u, text=f"/start {code}"))
        for u in ("801", "802")))
    assert sorted(r[0].key for r in results) == ["onboarding.code_used", "onboarding.welcome"]
