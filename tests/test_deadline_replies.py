"""The less common answers of /away, /timezone, /deadline done and /action: each read as a
person reads it, in every format."""

from __future__ import annotations

from sqlalchemy import select

from messages import FORMATS
from storage.db import Database
from storage.models import ActionPoint, Deadline, DeadlineKind
from tests.conftest import COORDINATOR, FP_CHILE, Transcript
from tests.test_updates import WILPF


def read(chat: Transcript) -> dict[str, str]:
    texts = {fmt: chat.text(-1, fmt) for fmt in FORMATS}
    assert all(texts.values())
    return texts


async def test_away_and_timezone_without_arguments_say_where_one_stands(
        chat: Transcript) -> None:
    await chat.say("/away", as_=FP_CHILE)
    assert chat.keys == ["deadlines.away_status"]
    assert read(chat)["plain"].startswith("Your reminders are on. To pause them: /away until")
    await chat.say("/away in 2 weeks", as_=FP_CHILE)
    await chat.say("/away", as_=FP_CHILE)
    assert chat.keys == ["deadlines.away_status"]
    assert read(chat)["plain"].startswith("Your reminders are paused until 15 March 2018")
    await chat.say("/timezone", as_=FP_CHILE)
    assert chat.keys == ["deadlines.timezone_show"]
    assert "America/Santiago" in read(chat)["plain"]


async def test_marking_deadlines_and_action_points_refuses_what_is_not_yours(
        chat: Transcript, demo_db: Database) -> None:
    async with demo_db.transaction() as session:
        custom = await session.scalar(select(Deadline.id).where(
            Deadline.kind == DeadlineKind.CUSTOM).limit(1))
        not_custom = await session.scalar(select(Deadline.id).where(
            Deadline.kind == DeadlineKind.MEETING_REGISTRATION).limit(1))
        done = await session.scalar(select(ActionPoint.id).where(ActionPoint.status == "done")
                                    .limit(1))
    assert custom and not_custom and done
    await chat.say(f"/deadline done {not_custom}", as_=FP_CHILE)
    assert chat.keys == ["deadlines.not_markable"]
    assert "is done where it happens" in read(chat)["plain"]
    await chat.say(f"/deadline done {custom}", as_=WILPF)  # civil society: not its deadline
    assert chat.keys == ["deadlines.not_yours"]
    assert read(chat)["plain"].endswith("is not one of your deadlines.")
    await chat.say("/action", as_=FP_CHILE)
    assert chat.keys == ["deadlines.action_usage"]
    assert "/action done N" in read(chat)["plain"]
    await chat.say("/action done 999", as_=FP_CHILE)
    assert chat.keys == ["deadlines.unknown_action"]
    assert "#999" in read(chat)["plain"]
    await chat.say(f"/action done {done}", as_=COORDINATOR)
    assert chat.keys == ["deadlines.action_already"]
    assert read(chat)["plain"] == f"Action point #{done} was already done."


async def test_a_deadline_form_refuses_unreadable_reminder_offsets(chat: Transcript) -> None:
    await chat.say("/deadline new", as_=COORDINATOR)
    answers = {"title": "Send the NAP survey", "asks": "-", "due_date": "2018-03-20",
               "due_time": "17:00", "audience": "1"}
    while (step := chat.last().step) is not None and step.field.name != "offsets":
        await chat.say(answers[step.field.name], as_=COORDINATOR)
    await chat.say("7 parsecs", as_=COORDINATOR)
    step = chat.last().step
    assert step is not None and step.field.name == "offsets"  # asked again, nothing lost
    assert "is not a reminder offset: use 7d (days), 12h (hours) or morning" in read(chat)["plain"]
