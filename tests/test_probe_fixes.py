"""Defects an outside-in probe found, each through the chat as a person reads it."""

from __future__ import annotations

from sqlalchemy import select

from storage.db import Database
from storage.models import NationalUpdate
from tests.conftest import COORDINATOR, FP_CHILE, Transcript
from tests.test_updates import file_update

FORMATS = ("plain", "html", "mrkdwn")


async def _to_links_step(chat: Transcript) -> None:
    await chat.say("/update", as_=FP_CHILE)
    for answer in ("event", "Regional meeting on NAPs", "Slovenia hosts a regional meeting."):
        await chat.say(answer, as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "links"


async def test_links_must_be_https_and_the_question_says_how_to_give_several(
        chat: Transcript) -> None:
    await _to_links_step(chat)
    asked = chat.text()
    assert "one per line" not in asked
    assert "separate several with spaces or new lines" in asked
    await chat.say("http://www.gov.si/wps", as_=FP_CHILE)
    for fmt in FORMATS:
        assert "“http://www.gov.si/wps” starts with http://; please give its https:// address" \
            in chat.text(fmt=fmt)
    await chat.say("https://www.gov.si/wps not a link", as_=FP_CHILE)
    assert "“not a link” is not a web address starting with https://" in chat.text()
    await chat.say("https://www.gov.si/wps https://www.un.org/wps", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "files"


async def test_a_meeting_link_must_be_https_too(chat: Transcript) -> None:
    from handlers import forms
    from handlers.types import UserError

    for given, key in (("http://meet.example.org/x", "forms.http_url"),
                       ("meet.example.org", "forms.bad_url")):
        try:
            forms.check_url(given)
        except UserError as err:
            assert err.key == key and err.context["address"] == given
        else:
            raise AssertionError(given)
    assert forms.check_url("https://meet.example.org/x") == "https://meet.example.org/x"


async def test_an_optional_answer_is_cleared_with_none_when_editing(
        chat: Transcript, demo_db: Database) -> None:
    update_id = await file_update(chat)  # filed with one link
    await chat.say(f"/edit {update_id}", as_=FP_CHILE)
    for _ in range(3):  # category, title, text kept
        await chat.say("-", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "links"
    for fmt in FORMATS:
        assert "send - to keep it, or none to clear it" in chat.text(fmt=fmt)
    await chat.say("none", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "files"
    await chat.say("-", as_=FP_CHILE)
    await chat.say("-", as_=FP_CHILE)
    assert chat.keys == ["updates.edited"], chat.keys
    async with demo_db.transaction() as session:
        row = await session.get(NationalUpdate, update_id)
        assert row is not None and row.links == []


async def test_a_required_answer_is_not_cleared_by_none(chat: Transcript) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/edit {update_id}", as_=FP_CHILE)
    await chat.say("-", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "title"
    assert "none to clear it" not in chat.text()
    await chat.say("none", as_=FP_CHILE)  # a title of one word, taken as typed
    assert chat.last().step is not None and chat.last().step.field.name == "text"


async def test_a_slack_modal_clears_an_optional_answer_by_emptying_it(
        chat: Transcript, demo_db: Database) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/edit {update_id}", as_=FP_CHILE)
    whole = chat.last().form
    assert whole is not None
    values = {f.name: f.value for f in whole.fields}
    values["links"] = ""
    await chat.say(as_=FP_CHILE, value="update", values=values)
    assert chat.keys == ["updates.edited"], chat.keys
    async with demo_db.transaction() as session:
        links = await session.scalar(select(NationalUpdate.links)
                                     .where(NationalUpdate.id == update_id))
        assert links == []
