"""National action plans: showing, updating through the form, history, the whole Network."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from handlers.clock import FrozenClock
from storage.db import Database
from storage.models import AuditEntry, Conversation, Member, NapHistory, NapStage, NapStatus
from tests.conftest import COORDINATOR, FP_CHILE, FP_GERMANY, Transcript

ALT_CHILE = "alt.chile@demo.invalid"
WILPF = "wilpf@demo.invalid"


async def fill(chat: Transcript, as_: str, *answers: str) -> None:
    """Answer the open form's steps in order, checking each one moves it on."""
    for answer in answers:
        await chat.say(answer, as_=as_)
        assert not chat.last().errors, (answer, chat.last().errors)


async def statuses(db: Database) -> dict[str, NapStatus]:
    async with db.transaction() as session:
        rows = await session.scalars(select(NapStatus))
        return {s.member.code: s for s in rows}


async def history_rows(db: Database, code: str) -> list[NapHistory]:
    async with db.transaction() as session:
        return list(await session.scalars(
            select(NapHistory).join(Member, Member.id == NapHistory.member_id)
            .where(Member.code == code).order_by(NapHistory.id)))


def values(chat: Transcript) -> list[str]:
    return [c.value for c in chat.last().choices]


async def test_own_status_before_anything_is_recorded(chat: Transcript) -> None:
    await chat.say("/nap", as_=FP_CHILE)
    assert chat.keys == ["nap.status"]
    assert chat.last().context["recorded"] is False
    assert "No NAP recorded for Chile yet. Press Update to record it." in chat.text()
    assert values(chat) == ["/nap update chile", "/nap history chile"]


async def test_updating_step_by_step_saves_status_history_and_audit(
    chat: Transcript, demo_db: Database
) -> None:
    await chat.say("/nap update", as_=FP_CHILE)
    assert chat.keys == ["nap.update_intro", "forms.question"]
    assert "Updating the NAP status of Chile" in chat.text(0)
    step = chat.last().step
    assert step is not None and (step.field.name, step.total) == ("stage", 6)
    assert [c.label for c in chat.last().choices] == ["No NAP", "In development", "Adopted"]
    await fill(chat, FP_CHILE, "adopted")  # a choice by its value
    assert [c.label for c in chat.last().choices] == ["1st", "2nd", "3rd", "4th"]
    await fill(chat, FP_CHILE, "2nd", "2016", "2", "1")  # "no" and "yes" by their numbers
    await chat.say("Yes", as_=FP_CHILE)  # by its label
    assert chat.keys == ["nap.status"] and chat.last().closes_form
    text = chat.text()
    assert text.startswith("Saved. The NAP status of Chile is now:")
    assert "2nd NAP (adopted 2016)" in text
    assert "Under review: no · Indicators: yes · Budget: yes" in text
    assert "Updated 1 March 2018 by Catalina Rojas (demo)" in text

    saved = (await statuses(demo_db))["chile"]
    assert (saved.stage, saved.plan_number, saved.year_adopted) == (NapStage.ADOPTED, 2, 2016)
    assert (saved.under_review, saved.has_indicators, saved.has_budget) == (False, True, True)
    assert len(await history_rows(demo_db, "chile")) == 1
    async with demo_db.transaction() as session:
        audit = await session.scalar(select(AuditEntry).where(AuditEntry.action == "nap.updated"))
        assert audit is not None and audit.subject == "member:chile"
        assert audit.details["plan_number"] == 2

    await chat.say("/nap", as_=ALT_CHILE)  # the alternate sees it, and may update it too
    assert "2nd NAP (adopted 2016)" in chat.text()
    assert values(chat) == ["/nap update chile", "/nap history chile"]


async def test_history_keeps_every_change_newest_first(
    chat: Transcript, demo_db: Database, clock: FrozenClock
) -> None:
    await chat.say("/nap update chile", as_=FP_CHILE)
    await fill(chat, FP_CHILE, "in_development", "-", "-", "no", "no", "no")
    clock.advance(days=40)
    await chat.say("/nap update", as_=ALT_CHILE)
    assert "Recorded now: NAP in development." in chat.text(0)
    await fill(chat, ALT_CHILE, "adopted", "1", "2018", "no", "yes", "no")
    assert len(await history_rows(demo_db, "chile")) == 2

    await chat.say("/nap history Chile", as_=WILPF)
    assert chat.keys == ["nap.history"]
    lines = chat.text().splitlines()
    assert lines[0] == "NAP history · Chile"
    assert lines[1] == "10 April 2018 · 1st NAP (adopted 2018) · indicators · by Tomás Fuentes (demo)"
    assert lines[2] == "1 March 2018 · NAP in development · by Catalina Rojas (demo)"
    assert len(lines) == 3


async def test_history_shows_the_last_ten(chat: Transcript, demo_db: Database,
                                          clock: FrozenClock) -> None:
    for year in range(2005, 2017):
        await chat.say("/nap update germany", as_=COORDINATOR)
        await fill(chat, COORDINATOR, "adopted", "1", str(year), "no", "no", "no")
        clock.advance(hours=1)
    await chat.say("/nap history germany", as_=FP_GERMANY)
    changes = chat.last().context["changes"]
    assert len(changes) == 10 and changes[0]["stage"] == "1st NAP (adopted 2016)"
    assert "The last 10 of 12 changes, newest first." in chat.text()
    await chat.say("/nap history", as_=FP_GERMANY)  # one's own member by default
    assert chat.keys == ["nap.history"]
    await chat.say("/nap history", as_=COORDINATOR)
    assert chat.keys == ["nap.history_usage"]


async def test_a_focal_point_never_updates_another_member(chat: Transcript,
                                                         demo_db: Database) -> None:
    await chat.say("/nap update Germany", as_=FP_CHILE)
    assert chat.keys == ["nap.not_yours"]
    assert "Only the focal points of Germany and the secretariat" in chat.text()
    await chat.say("/nap germany", as_=FP_CHILE)  # seeing is fine; no Update button
    assert chat.keys == ["nap.status"] and values(chat) == ["/nap history germany"]
    async with demo_db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Conversation)) == 0
    assert await statuses(demo_db) == {}


async def test_the_secretariat_updates_anyone(chat: Transcript, demo_db: Database) -> None:
    await chat.say("/nap", as_=COORDINATOR)
    assert chat.keys == ["nap.hint"] and values(chat) == ["/nap all"]
    await chat.say("/nap update", as_=COORDINATOR)
    assert chat.keys == ["nap.update_usage"]
    await chat.say("/nap update african union", as_=COORDINATOR)
    await fill(chat, COORDINATOR, "3", "1", "2016", "2", "1", "2")
    assert "1st NAP (adopted 2016)" in chat.text()
    assert "by Amina Diallo (demo)" in chat.text()
    assert (await statuses(demo_db))["african-union"].updated_by is not None


async def test_civil_society_can_look_but_not_update(chat: Transcript) -> None:
    await chat.say("/nap", as_=WILPF)
    assert chat.keys == ["nap.hint"]
    await chat.say("/nap Chile", as_=WILPF)
    assert chat.keys == ["nap.status"] and values(chat) == ["/nap history chile"]
    await chat.say("/nap update chile", as_=WILPF)
    assert chat.keys == ["nap.not_yours"]


async def test_an_unknown_member_is_named_back(chat: Transcript) -> None:
    await chat.say("/nap Atlantis", as_=FP_CHILE)
    assert chat.keys == ["nap.unknown_member"]
    assert "I don't know a member called “Atlantis”" in chat.text()
    await chat.say("/nap update Atlantis", as_=COORDINATOR)
    assert chat.keys == ["nap.unknown_member"]


@pytest.mark.parametrize("year", ["20x8", "1850", "2019", "16"])
async def test_a_bad_year_re_asks_the_step(chat: Transcript, year: str) -> None:
    await chat.say("/nap update", as_=FP_CHILE)
    await fill(chat, FP_CHILE, "adopted", "1")
    await chat.say(year, as_=FP_CHILE)
    step = chat.last().step
    assert step is not None and step.field.name == "year_adopted"
    assert chat.last().errors == {
        "year_adopted": "Please give the year as four digits, from 2000 to 2018."}
    await fill(chat, FP_CHILE, "2018")
    assert chat.last().step is not None and chat.last().step.field.name == "under_review"


@pytest.mark.parametrize("plan", ["0", "21", "second", "2.5"])
async def test_a_bad_plan_number_re_asks_the_step(chat: Transcript, plan: str) -> None:
    await chat.say("/nap update", as_=FP_CHILE)
    await fill(chat, FP_CHILE, "adopted")
    await chat.say(plan, as_=FP_CHILE)
    assert "from 1 to 20" in chat.last().errors["plan_number"]
    await fill(chat, FP_CHILE, "12th")  # beyond the buttons, typed
    assert chat.last().step is not None and chat.last().step.field.name == "year_adopted"


async def test_an_adopted_plan_needs_its_number_and_year(chat: Transcript,
                                                         demo_db: Database) -> None:
    await chat.say("/nap update", as_=FP_CHILE)
    await fill(chat, FP_CHILE, "adopted", "-", "2016")
    await chat.say("no", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "under_review"
    assert "needs its number and the year" in chat.last().errors["under_review"]
    await chat.say("/back", as_=FP_CHILE)
    await chat.say("/back", as_=FP_CHILE)
    await fill(chat, FP_CHILE, "3", "2016", "no", "no", "no")
    assert chat.keys == ["nap.status"] and "3rd NAP (adopted 2016)" in chat.text()
    assert len(await history_rows(demo_db, "chile")) == 1


async def test_a_plan_not_adopted_keeps_no_number_or_year(chat: Transcript,
                                                          demo_db: Database) -> None:
    await chat.say("/nap update", as_=FP_CHILE)
    await fill(chat, FP_CHILE, "adopted", "2", "2016", "no", "no", "no")
    await chat.say("/nap update", as_=FP_CHILE)
    assert chat.last().form is not None  # the modal starts from what is recorded
    assert {f.name: f.value for f in chat.last().form.fields}["plan_number"] == "2"
    await fill(chat, FP_CHILE, "none", "4", "2017", "no", "no", "no")
    assert "No NAP" in chat.text()
    saved = (await statuses(demo_db))["chile"]
    assert (saved.stage, saved.plan_number, saved.year_adopted) == ("none", None, None)


async def test_a_second_update_starts_from_what_is_recorded(chat: Transcript,
                                                            demo_db: Database) -> None:
    await chat.say("/nap update", as_=FP_CHILE)
    await fill(chat, FP_CHILE, "adopted", "2", "2016", "no", "yes", "no")
    await chat.say("/nap update", as_=ALT_CHILE)
    assert "send - to keep an answer" in chat.text(0)
    await fill(chat, ALT_CHILE, "-", "-", "-", "yes", "-", "-")  # only "under review" changes
    assert "2nd NAP (adopted 2016)" in chat.text()
    assert "Under review: yes · Indicators: yes · Budget: no" in chat.text()
    assert len(await history_rows(demo_db, "chile")) == 2


async def test_a_whole_form_at_once_keeps_the_member(chat: Transcript, demo_db: Database) -> None:
    """A Slack modal sends every field together; the member comes from the open form."""
    await chat.say("/nap update germany", as_=COORDINATOR)
    version = chat.last().form.version if chat.last().form else None
    answers = {"stage": "adopted", "plan_number": "2", "year_adopted": "2017",
               "under_review": "no", "has_indicators": "yes", "has_budget": "no"}
    await chat.say(as_=COORDINATOR, value="nap", values=answers, form_version=version)
    assert chat.keys == ["nap.status"] and "Germany" in chat.text()
    assert (await statuses(demo_db))["germany"].plan_number == 2

    await chat.say(as_=COORDINATOR, value="nap", values=answers)  # no form open any more
    assert chat.keys == ["forms.stale_modal"]
    assert len(await history_rows(demo_db, "germany")) == 1


async def test_the_whole_network_by_region_with_counts(chat: Transcript, demo_db: Database,
                                                       clock: FrozenClock) -> None:
    async with demo_db.transaction() as session:
        ids = {m.code: m.id for m in await session.scalars(select(Member))}
        session.add_all([
            NapStatus(member_id=ids["chile"], stage=NapStage.ADOPTED, plan_number=2,
                      year_adopted=2016, updated_at=clock.now()),
            NapStatus(member_id=ids["brazil"], stage=NapStage.IN_DEVELOPMENT,
                      updated_at=clock.now()),
            NapStatus(member_id=ids["germany"], stage=NapStage.ADOPTED, plan_number=2,
                      year_adopted=2017, updated_at=clock.now()),
            NapStatus(member_id=ids["cyprus"], stage=NapStage.NONE, updated_at=clock.now()),
        ])
    await chat.say("/nap all", as_=WILPF)
    assert chat.keys == ["nap.all"]
    text = chat.text()
    lines = text.splitlines()
    headers = [line for line in lines if " with a NAP" in line and " of " in line]
    assert [h.split(" · ")[0] for h in headers] == [
        "African States", "Asia-Pacific States", "Eastern European States",
        "Latin American and Caribbean States", "Western European and other States",
        "Regional organizations"]
    assert ("Latin American and Caribbean States · 1 of 7 with a NAP, 1 in development"
            in lines)
    assert "Brazil: in development; Chile: 2nd NAP (2016)" in lines
    assert "Cyprus: no NAP" in text and "Germany: 2nd NAP (2017)" in text
    assert "5 members with no NAP recorded" in lines
    assert lines[-1] == "2 of 78 members have a NAP · 1 developing one · 74 not recorded"


async def test_the_whole_network_fits_one_message_when_every_member_has_a_plan(
    chat: Transcript, demo_db: Database, clock: FrozenClock
) -> None:
    async with demo_db.transaction() as session:
        for n, member in enumerate(await session.scalars(select(Member))):
            session.add(NapStatus(member_id=member.id, stage=NapStage.ADOPTED,
                                  plan_number=n % 4 + 1, year_adopted=2010 + n % 9,
                                  updated_at=clock.now() - timedelta(days=n)))
    await chat.say("/nap all", as_=COORDINATOR)
    assert chat.last().context["adopted"] == 78
    assert "78 of 78 members have a NAP" in chat.text()
    assert "Bosnia and Herzegovina: " in chat.text()
    for fmt in ("plain", "html", "mrkdwn"):
        assert len(chat.text(fmt=fmt)) < 3500, fmt
