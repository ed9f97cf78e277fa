"""Conversations that respect the person (issue 8): no form dropped without asking, free text
answered for what it is, destructive actions confirmed, new members welcome.

Every reply asserted on is rendered in plain text, Telegram HTML and Slack mrkdwn, and the
assertions read what a person reads.
"""

from __future__ import annotations

import csv
from typing import Any

from sqlalchemy import func, select

from handlers import COMMANDS, FORMS, FREE_TEXT
from handlers.clock import FrozenClock
from handlers.dispatch import Core
from handlers.types import MAX_TEXT, Outgoing
from handlers.updates import UPDATE_FORM
from messages import Renderer
from storage.db import Database
from storage.models import (
    Conversation,
    Member,
    MembershipRequest,
    NationalUpdate,
    OutboxItem,
    Person,
)
from storage.roster import MEMBERS_CSV, REGIONS
from tests.conftest import COORDINATOR, FP_CHILE, Transcript
from tests.test_updates import CHILE_NAP, file_update

FORMATS = ("plain", "html", "mrkdwn")
TG_USER = "7001"


def read(chat: Transcript, index: int = -1) -> str:
    """The reply as the person reads it (plain), after rendering it in every format."""
    for fmt in FORMATS:
        assert chat.text(index, fmt).strip(), fmt
    return chat.text(index, "plain")


def read_all(chat: Transcript) -> list[str]:
    return [read(chat, i) for i in range(len(chat.replies))]


def labels(out: Outgoing) -> list[str]:
    return [c.label for c in out.choices]


def render_outbox(renderer: Renderer, item: OutboxItem) -> str:
    message = Outgoing.from_dict(item.message)
    for fmt in FORMATS:
        renderer.render(message.key, "en", fmt, **message.context)
    return renderer.render(message.key, "en", "plain", **message.context)


async def open_form(db: Database, user: str) -> Conversation | None:
    async with db.transaction() as session:
        return await session.scalar(select(Conversation).where(Conversation.user_id == user))


async def update_half_filled(chat: Transcript) -> None:
    """Chile's focal point is at question 3 of 6 of a national update."""
    await chat.say("/update", as_=FP_CHILE)
    await chat.say("event", as_=FP_CHILE)
    await chat.say("Regional meeting on NAPs of Western Balkan countries", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "text"


# -- 4. a half-filled form is never thrown away silently ------------------------------------
async def test_another_form_command_mid_form_asks_first(chat: Transcript,
                                                        demo_db: Database) -> None:
    await update_half_filled(chat)
    await chat.say("/nap update", as_=FP_CHILE)
    assert chat.keys == ["forms.switch"]
    assert read(chat) == ("You are filling in National update (3 of 6). "
                          "Continue it, or drop it and start NAP status?")
    assert "<b>National update</b>" in chat.text(fmt="html")
    assert "*NAP status*" in chat.text(fmt="mrkdwn")
    assert labels(chat.last()) == ["Continue National update", "Drop it, start NAP status"]
    conv = await open_form(demo_db, FP_CHILE)
    assert conv is not None and (conv.form, conv.step) == ("update", "text")
    assert conv.answers["title"].startswith("Regional meeting")

    await chat.say(chat.last().choices[0].value, as_=FP_CHILE)  # Continue
    assert chat.keys == ["forms.question"]
    assert "National update · 3/6" in read(chat)
    assert "The update itself" in read(chat)

    await chat.say("/nap update", as_=FP_CHILE)
    await chat.say(chat.last().choices[1].value, as_=FP_CHILE)  # Drop it, start NAP status
    assert chat.keys == ["forms.cancelled", "nap.update_intro", "forms.question"]
    assert read_all(chat)[0] == "National update: cancelled. Nothing was saved."
    assert "NAP status · 1/6" in read(chat)
    conv = await open_form(demo_db, FP_CHILE)
    assert conv is not None and conv.form == "nap"


async def test_an_old_drop_button_drops_nothing(chat: Transcript, demo_db: Database) -> None:
    await update_half_filled(chat)
    await chat.say("/update", as_=FP_CHILE)  # the same form again
    assert read(chat).endswith("Continue it, or drop it and start it again?")
    drop = chat.last().choices[1]
    assert drop.label == "Drop it, start again"
    await chat.say("Slovenia hosts a regional meeting in February 2018.", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "links"
    await chat.say(drop.value, as_=FP_CHILE)  # pressed after answering: the form moved on
    assert chat.keys == ["forms.stale", "forms.question"]
    assert "earlier question" in read(chat, 0) and "National update · 4/6" in read(chat)
    conv = await open_form(demo_db, FP_CHILE)
    assert conv is not None and conv.answers["text"].startswith("Slovenia hosts")


async def test_continue_or_drop_with_no_form_open_is_explained(chat: Transcript) -> None:
    await chat.say("/drop", as_=FP_CHILE)
    assert chat.keys == ["forms.none_open"]
    assert "no longer open" in read(chat)


async def test_a_form_command_that_asks_first_changes_nothing(chat: Transcript,
                                                              demo_db: Database) -> None:
    update_id = await file_update(chat)
    await chat.say("/review", as_=COORDINATOR)
    await chat.say(f"/review changes {update_id}", as_=COORDINATOR)  # the note form opens
    await chat.say("/update Chile", as_=COORDINATOR)  # would open the update form
    assert chat.keys == ["forms.switch"]
    assert "You are filling in Review (1 of 1)" in read(chat)
    await chat.say("Please name the year the plan was adopted.", as_=COORDINATOR)
    assert chat.keys == ["review.done_changes_requested"]
    async with demo_db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Conversation)) == 0


async def test_a_command_mid_form_shows_the_question_again(chat: Transcript) -> None:
    await update_half_filled(chat)
    await chat.say("/troika", as_=FP_CHILE)
    assert chat.keys == ["troika.show", "forms.question"]
    text = read(chat)
    assert text.startswith("You are still filling in National update")
    assert "National update · 3/6" in text and "The update itself" in text
    assert "question above" not in text


async def test_a_form_resumed_by_a_new_process_shows_its_question(
        chat: Transcript, demo_db: Database, clock: FrozenClock, renderer: Renderer) -> None:
    await update_half_filled(chat)
    await chat.core.db.dispose()
    restarted = Core(Database(demo_db.url), COMMANDS, FORMS, clock=clock, renderer=renderer,
                     free_text=FREE_TEXT)
    try:
        resumed = await restarted.form_in_progress("console", FP_CHILE)
        assert resumed is not None
        for fmt in FORMATS:
            renderer.render(resumed.key, "en", fmt, **resumed.context)
        text = renderer.render(resumed.key, "en", "plain", **resumed.context)
        assert text.startswith("You are still filling in National update")
        assert "3/6" in text and "The update itself" in text
        assert await restarted.form_in_progress("console", "fp.germany@demo.invalid") is None
    finally:
        await restarted.db.dispose()


# -- 5. free text ---------------------------------------------------------------------------
async def test_greetings_and_help_get_the_help(chat: Transcript) -> None:
    for text in ("help", "Hello!", "hi there", "Bonjour"):
        await chat.say(text, as_=FP_CHILE)
        assert chat.keys == ["network.help"], text
        assert "/update [member] · file a national update" in read(chat)


async def test_short_texts_get_a_plain_answer_not_an_offer(chat: Transcript,
                                                           demo_db: Database) -> None:
    await chat.say("2", as_=FP_CHILE)
    assert chat.keys == ["free_text.number"]
    assert read(chat).startswith("A number on its own answers a question of a form")
    for text in ("👍", "thanks", "Thank you!", "ok"):
        await chat.say(text, as_=FP_CHILE)
        assert chat.keys == ["free_text.thanks"], text
        assert read(chat).startswith("You're welcome.")
    await chat.say("Chile NAP", as_=FP_CHILE)
    assert chat.keys == ["free_text.unclear"]
    assert read(chat).startswith("I'm not sure what you mean by “Chile NAP”.")
    assert "send /update" in read(chat)
    await chat.say("When is the next meeting in New York?", as_=FP_CHILE)
    assert chat.keys == ["free_text.question"]
    assert "only commands: send /help" in read(chat)
    assert await open_form(demo_db, FP_CHILE) is None  # nothing was offered


async def test_a_wish_to_register_for_a_meeting_points_to_the_meeting_commands(
        chat: Transcript) -> None:
    await chat.say("I want to register for the next meeting", as_=FP_CHILE)
    assert chat.keys == ["free_text.meetings"]
    assert read(chat).startswith(
        "For meetings:\n/meetings · upcoming meetings, with seats left and your own status\n"
        "/register [n] · register yourself or your delegation for a meeting\n")
    await chat.say("We would like to attend the meeting in Berlin", as_=FP_CHILE)
    assert chat.keys == ["free_text.meetings"]


async def test_text_that_reads_like_an_update_is_offered_with_its_cancel(
        chat: Transcript) -> None:
    await chat.say("Slovenia hosts a regional meeting on NAPs in February 2018", as_=FP_CHILE)
    assert chat.keys == ["forms.question"]  # one message: the offer, the question, Cancel
    text = read(chat)
    assert text.startswith("File this as an update for Chile? Choose its kind below to go on, "
                           "or /cancel if it is not an update")
    assert "National update · 1/5" in text
    step = chat.last().step
    assert step is not None and step.field.name == "category"  # Cancel is a control of a step
    await chat.say("/cancel", as_=FP_CHILE)
    assert read(chat) == "National update: cancelled. Nothing was saved."


# -- 6. destructive actions confirm ---------------------------------------------------------
async def test_withdraw_asks_once_with_the_title(chat: Transcript, demo_db: Database) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/withdraw {update_id}", as_=FP_CHILE)
    assert chat.keys == ["updates.confirm_withdraw"]
    assert read(chat) == (f"Withdraw update #{update_id}, {CHILE_NAP[0]} (Chile, waiting for "
                          "review)? It leaves the review queue and the newsletter, and cannot "
                          "be brought back.")
    assert labels(chat.last()) == ["Withdraw", "Keep it"]
    withdraw, keep = chat.last().choices
    await chat.say(keep.value, as_=FP_CHILE)
    assert read(chat) == f"Nothing changed: update #{update_id}, {CHILE_NAP[0]}, stays as it is."
    async with demo_db.transaction() as session:
        row = await session.get(NationalUpdate, update_id)
        assert row is not None and row.status == "submitted"
    await chat.say(withdraw.value, as_=FP_CHILE)
    assert read(chat) == (f"Update #{update_id} ({CHILE_NAP[0]}) is withdrawn; "
                          "it will not appear anywhere.")
    async with demo_db.transaction() as session:
        row = await session.get(NationalUpdate, update_id)
        assert row is not None and row.status == "withdrawn"


async def test_a_withdraw_button_of_an_edited_update_asks_again(chat: Transcript) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/withdraw {update_id}", as_=FP_CHILE)
    withdraw = chat.last().choices[0]
    await chat.say(f"/edit {update_id}", as_=FP_CHILE)
    for answer in ("-", "Chile: indicators in the second NAP", "-", "-", "-", "-"):
        await chat.say(answer, as_=FP_CHILE)
    await chat.say(withdraw.value, as_=FP_CHILE)
    assert chat.keys == ["updates.confirm_withdraw"]
    assert read(chat).startswith(f"Update #{update_id} changed since you asked")
    assert "Chile: indicators in the second NAP" in read(chat)


async def test_review_changes_on_an_update_not_in_review_refuses_at_once(
        chat: Transcript, demo_db: Database) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/withdraw {update_id}v1", as_=FP_CHILE)
    await chat.say(f"/review changes {update_id}", as_=COORDINATOR)
    assert chat.keys == ["review.not_in_review"]
    assert read(chat) == f"#{update_id} is not waiting for review any more: its author withdrew it."
    assert await open_form(demo_db, COORDINATOR) is None  # no comment was asked for
    await chat.say(f"/review reject {update_id}", as_=COORDINATOR)
    assert chat.keys == ["review.not_in_review"]


async def test_the_review_button_of_a_stale_notice_answers_clearly(
        chat: Transcript, demo_db: Database, renderer: Renderer) -> None:
    first = await file_update(chat)
    second = await file_update(chat, title="Defence directive on resolution 1325")
    async with demo_db.transaction() as session:
        notice = await session.scalar(select(OutboxItem).order_by(OutboxItem.id))
    assert notice is not None
    assert render_outbox(renderer, notice).startswith(f"New update #{first} to review")
    review = Outgoing.from_dict(notice.message).choices[0]
    assert (review.value, review.label) == (f"/review {first}", "Review")

    await chat.say(review.value, as_=COORDINATOR)  # still waiting: that very update
    assert chat.keys == ["review.item"] and chat.last().context["id"] == first
    assert f"Review #{first} · 2 waiting" in read(chat)

    await chat.say(f"/withdraw {first}v1", as_=FP_CHILE)
    await chat.say(review.value, as_=COORDINATOR)  # the same notice, pressed again
    assert chat.keys == ["review.no_longer_waiting"]
    assert read(chat) == (f"#{first}, {CHILE_NAP[0]}, is no longer waiting for review: "
                          "its author withdrew it. 1 other is waiting.")
    assert labels(chat.last()) == ["Next"]
    await chat.say(chat.last().choices[0].value, as_=COORDINATOR)
    assert chat.last().context["id"] == second


# -- 7. a country that is not yet a member can ask to join ----------------------------------
async def request_new_member(chat: Transcript, name: str, region_label: str,
                             user: str = TG_USER) -> int:
    await chat.say("/start", as_=user, platform="telegram")
    await chat.say(name, as_=user, platform="telegram")
    assert chat.last().step is not None and chat.last().step.field.name == "region"
    question = read(chat)
    assert f"“{name}” is not a member of the Network yet. In which region is it?" in question
    assert "Membership request · 2/6" in question
    assert region_label in labels(chat.last())
    for answer in (region_label, "Ana Pérez", "Director of Human Rights",
                   "Ministry of Foreign Affairs", f"ana.{user}@example.org"):
        await chat.say(answer, as_=user, platform="telegram")
    assert chat.keys == ["onboarding.request_received"]
    return int(chat.last().context["id"])


async def test_a_country_not_yet_a_member_asks_to_join_and_is_added(
        chat: Transcript, demo_db: Database, renderer: Renderer) -> None:
    request_id = await request_new_member(chat, "Peru", "Latin American and Caribbean States")
    assert read(chat).startswith(f"Thank you. Your request (#{request_id}) to join as focal "
                                 "point of Peru, a new member of the Network, is with the "
                                 "secretariat.")
    async with demo_db.transaction() as session:
        notice = await session.scalar(select(OutboxItem))
        assert await session.scalar(select(Member).where(Member.name == "Peru")) is None
    assert notice is not None
    assert ("Wants to join as focal point of Peru · new member (Latin American and Caribbean "
            "States): approving adds it to the Network") in render_outbox(renderer, notice)

    await chat.say("/requests", as_=COORDINATOR)
    assert (f"#{request_id} · Peru (new member, Latin American and Caribbean States) · "
            "Ana Pérez") in read(chat)
    await chat.say(f"/requests approve {request_id}", as_=COORDINATOR)
    assert read(chat) == ("Approved: Ana Pérez is now focal point of Peru, which joins the "
                          "Network as a new member (Latin American and Caribbean States), "
                          "and has been told.")
    async with demo_db.transaction() as session:
        peru = await session.scalar(select(Member).where(Member.name == "Peru"))
        assert peru is not None
        assert (peru.code, peru.kind, peru.region) == (
            "peru", "state", "Latin American and Caribbean States")
        told = await session.scalar(select(OutboxItem).order_by(OutboxItem.id.desc()))
    assert told is not None
    assert "approved you as focal point of Peru, which is now a member of the Network" in (
        render_outbox(renderer, told))
    await chat.say("/whoami", as_=TG_USER, platform="telegram")
    assert chat.last().context["roles"] == [{"role": "focal_point", "member": "Peru"}]
    await chat.say("/update", as_=TG_USER, platform="telegram")  # and files for Peru
    assert chat.last().step is not None and chat.last().step.field.name == "category"


async def test_a_new_regional_organization_asks_to_join(chat: Transcript,
                                                        demo_db: Database) -> None:
    request_id = await request_new_member(chat, "League of Arab States",
                                          "A regional organization")
    await chat.say(f"/requests approve {request_id}", as_=COORDINATOR)
    assert "which joins the Network as a new member (A regional organization)" in read(chat)
    async with demo_db.transaction() as session:
        league = await session.scalar(select(Member).where(Member.name == "League of Arab States"))
        assert league is not None
        assert (league.code, league.kind, league.region) == (
            "league-of-arab-states", "regional_organization", "Regional organizations")


async def test_two_requests_for_the_same_new_member_make_one_member(
        chat: Transcript, demo_db: Database) -> None:
    first = await request_new_member(chat, "Peru", "Latin American and Caribbean States")
    second = await request_new_member(chat, "Peru", "Latin American and Caribbean States",
                                      user="7002")
    await chat.say(f"/requests approve {first}", as_=COORDINATOR)
    await chat.say(f"/requests approve {second}", as_=COORDINATOR)
    assert chat.keys == ["onboarding.approved_done"]
    async with demo_db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Member)
                                    .where(Member.name == "Peru")) == 1
        people = await session.scalar(select(func.count()).select_from(Person)
                                      .where(Person.name == "Ana Pérez"))
    assert people == 2


async def test_a_known_member_is_not_asked_its_region_and_back_fixes_a_typo(
        chat: Transcript, demo_db: Database) -> None:
    await chat.say("/start", as_=TG_USER, platform="telegram")
    await chat.say("Chlie", as_=TG_USER, platform="telegram")  # a typo: the close member asked
    assert "Did you mean Chile?" in read(chat)
    await chat.say("/back", as_=TG_USER, platform="telegram")
    await chat.say("Chile", as_=TG_USER, platform="telegram")
    assert chat.last().step is not None and chat.last().step.field.name == "name"
    assert "Membership request · 2/5" in read(chat)
    for answer in ("Ana Pérez", "Director", "Ministry of Foreign Affairs", "ana@example.org"):
        await chat.say(answer, as_=TG_USER, platform="telegram")
    async with demo_db.transaction() as session:
        request = await session.scalar(select(MembershipRequest))
    assert request is not None and request.member_name == "Chile"
    assert (request.new_member, request.new_member_region) == ("", "")


async def test_a_name_that_is_no_name_is_re_asked(chat: Transcript) -> None:
    await chat.say("/start", as_=TG_USER, platform="telegram")
    await chat.say("42", as_=TG_USER, platform="telegram")
    assert chat.last().errors == {"member": "“42” is not the name of a country or an "
                                            "organization. Please write its name, for "
                                            "example Peru."}
    assert "Which Member State or regional organization do you represent?" in read(chat)


async def test_a_modal_asks_the_region_only_of_a_new_member(chat: Transcript,
                                                            demo_db: Database) -> None:
    await chat.say("/start", as_="T1/U1", platform="slack")
    whole = chat.last().form
    assert whole is not None
    region = next(f for f in whole.fields if f.name == "region")
    assert not region.required and region.label == ("For a member not yet in the Network: "
                                                    "its region")
    values: dict[str, Any] = {"member": "Peru", "name": "Ana", "title": "Director",
                              "ministry": "MFA", "email": "ana@example.org"}
    await chat.say(as_="T1/U1", platform="slack", value="membership", values=values)
    assert chat.keys == ["forms.invalid"] and chat.last().errors == {"region": "This is required."}
    await chat.say(as_="T1/U1", platform="slack", value="membership",
                   values={**values, "region": "asia_pacific"})
    assert chat.keys == ["onboarding.request_received"]
    async with demo_db.transaction() as session:
        request = await session.scalar(select(MembershipRequest))
    assert request is not None
    assert (request.new_member, request.new_member_region) == ("Peru", "asia_pacific")


def test_the_regions_offered_are_the_regions_of_the_members() -> None:
    with MEMBERS_CSV.open(encoding="utf-8", newline="") as fh:
        used = {row["region"] for row in csv.DictReader(fh)}
    assert used == set(REGIONS.values())


# -- 8. one limit for a message and an update ----------------------------------------------
async def test_a_message_and_an_update_have_one_limit(chat: Transcript, demo_db: Database) -> None:
    longest = ("Chile reports progress on its second national action plan. " * 60)[:MAX_TEXT]
    await chat.say(longest, as_=FP_CHILE)
    assert chat.keys == ["forms.question"]  # offered whole: nothing cut off
    conv = await open_form(demo_db, FP_CHILE)
    assert conv is not None and conv.answers["text"] == longest.strip()
    await chat.say("/cancel", as_=FP_CHILE)
    await chat.say(longest + "!", as_=FP_CHILE)
    assert chat.keys == ["errors.too_long"]
    assert read(chat) == (f"Your message has {MAX_TEXT + 1} characters; I can take at most "
                          f"{MAX_TEXT}. Nothing was saved: please shorten it and send it again.")
    assert UPDATE_FORM.field("text").max_length == MAX_TEXT
