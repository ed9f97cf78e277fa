"""The form engine: one step at a time, re-asking on a wrong answer, Back, Cancel, restarts."""

from __future__ import annotations

from typing import Any

import pytest

from handlers import COMMANDS, FORMS, forms
from handlers.clock import FrozenClock
from handlers.context import Context
from handlers.dispatch import Core
from handlers.forms import Field, Form
from handlers.routing import Access, Command
from handlers.types import Choice, Incoming, Outgoing
from messages import Renderer
from storage.db import Database
from tests.conftest import FP_CHILE, Transcript


async def _kinds(ctx: Context, answers: dict[str, Any]) -> list[Choice]:
    return [Choice("event", "Event"), Choice("nap", "NAP progress")]


async def _submit(ctx: Context, answers: dict[str, Any]) -> list[Outgoing]:
    return [Outgoing("forms.cancelled", {"title": repr(sorted(answers.items()))})]


SAMPLE = Form(
    name="sample",
    title="onboarding.form_title",
    fields=(
        Field("kind", "onboarding.ask_member", kind="choice", choices=_kinds),
        Field("title", "onboarding.ask_name", max_length=20),
        Field("link", "onboarding.ask_title", kind="url", required=False),
        Field("when", "onboarding.ask_ministry", kind="date"),
    ),
    submit=_submit,
)


async def _open_sample(msg: Incoming, ctx: Context) -> list[Outgoing]:
    return [await forms.start(ctx, SAMPLE)]


@pytest.fixture
def sample_chat(demo_db: Database, clock: FrozenClock, renderer: Renderer) -> Transcript:
    commands = (*COMMANDS, Command("sample", _open_sample, Access.REGISTERED, "help.help"))
    core = Core(demo_db, commands, {**FORMS, "sample": SAMPLE}, clock=clock, renderer=renderer)
    return Transcript(core, renderer)


def submitted(chat: Transcript) -> str:
    assert chat.keys == ["forms.cancelled"], chat.keys
    return str(chat.last().context["title"])


async def test_a_form_asks_each_step_and_submits(sample_chat: Transcript) -> None:
    chat = sample_chat
    await chat.say("/sample", as_=FP_CHILE)
    step = chat.last().step
    assert step is not None and (step.index, step.total, step.can_go_back) == (1, 4, False)
    assert [c.label for c in chat.last().choices] == ["Event", "NAP progress"]
    assert chat.last().form is not None and len(chat.last().form.fields) == 4
    await chat.say("2", as_=FP_CHILE)  # a choice by its number
    await chat.say("Third NAP adopted", as_=FP_CHILE)
    await chat.say("-", as_=FP_CHILE)  # optional: skipped
    await chat.say("2018-04-09", as_=FP_CHILE)
    assert submitted(chat) == repr(sorted({"kind": "nap", "title": "Third NAP adopted",
                                           "link": "", "when": "2018-04-09"}.items()))


async def test_a_wrong_answer_re_asks_the_same_step_with_the_reason(sample_chat: Transcript) -> None:
    chat = sample_chat
    await chat.say("/sample", as_=FP_CHILE)
    await chat.say("Workshop", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "kind"
    assert chat.last().errors == {"kind": "Please pick one of the options."}
    await chat.say("event", as_=FP_CHILE)
    await chat.say("x" * 21, as_=FP_CHILE)
    assert chat.last().errors == {"title": "That is 21 characters; the limit is 20."}
    await chat.say("Regional NAP meeting", as_=FP_CHILE)
    await chat.say("javascript:alert(1)", as_=FP_CHILE)
    assert chat.last().step.field.name == "link"
    assert "web address" in chat.last().errors["link"]
    await chat.say("https://www.un.org/wps", as_=FP_CHILE)
    await chat.say("9 April", as_=FP_CHILE)
    assert "YYYY-MM-DD" in chat.last().errors["when"]


async def test_back_returns_to_the_previous_step_keeping_answers(sample_chat: Transcript) -> None:
    chat = sample_chat
    await chat.say("/sample", as_=FP_CHILE)
    await chat.say("event", as_=FP_CHILE)
    await chat.say("/back", as_=FP_CHILE)
    step = chat.last().step
    assert step is not None and step.field.name == "kind" and step.field.value == "event"
    await chat.say("nap", as_=FP_CHILE)
    await chat.say("Title", as_=FP_CHILE)
    await chat.say("", as_=FP_CHILE, action="skip")
    await chat.say("2018-01-31", as_=FP_CHILE)
    assert "'nap'" in submitted(chat)


async def test_cancel_drops_the_form_and_saves_nothing(sample_chat: Transcript) -> None:
    chat = sample_chat
    await chat.say("/sample", as_=FP_CHILE)
    await chat.say("event", as_=FP_CHILE)
    await chat.say("/cancel", as_=FP_CHILE)
    assert chat.keys == ["forms.cancelled"]
    assert "Membership request: cancelled" in chat.text()
    await chat.say("some text", as_=FP_CHILE)
    assert chat.keys == ["errors.free_text"]
    await chat.say("/cancel", as_=FP_CHILE)
    assert chat.keys == ["forms.nothing_to_cancel"]


async def test_a_button_from_an_earlier_step_is_not_taken(sample_chat: Transcript) -> None:
    chat = sample_chat
    await chat.say("/sample", as_=FP_CHILE)
    old = chat.last().step
    assert old is not None
    await chat.say("event", as_=FP_CHILE)
    await chat.say(as_=FP_CHILE, action="answer", value="1", form_version=old.version)
    assert chat.keys == ["forms.stale", "forms.question"]
    assert chat.last().step is not None and chat.last().step.field.name == "title"


async def test_a_command_mid_form_is_answered_and_the_form_stays(sample_chat: Transcript) -> None:
    chat = sample_chat
    await chat.say("/sample", as_=FP_CHILE)
    await chat.say("/whoami", as_=FP_CHILE)
    assert chat.keys == ["network.whoami", "forms.question"]  # the question again, below
    assert "You are still filling in Membership request" in chat.text()
    assert "answer the question above" not in chat.text().lower()
    await chat.say("event", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "title"


async def test_a_form_survives_a_restart(sample_chat: Transcript, demo_db: Database,
                                         clock: FrozenClock, renderer: Renderer) -> None:
    await sample_chat.say("/sample", as_=FP_CHILE)
    await sample_chat.say("event", as_=FP_CHILE)
    await demo_db.dispose()
    restarted = Database(demo_db.url)
    commands = (*COMMANDS, Command("sample", _open_sample, Access.REGISTERED, "help.help"))
    chat = Transcript(Core(restarted, commands, {**FORMS, "sample": SAMPLE}, clock=clock,
                           renderer=renderer), renderer)
    try:
        await chat.say("After the restart", as_=FP_CHILE)
        await chat.say("-", as_=FP_CHILE)
        await chat.say("2018-04-10", as_=FP_CHILE)
        assert "After the restart" in submitted(chat)
    finally:
        await restarted.dispose()


async def test_a_whole_form_reports_errors_on_each_field(sample_chat: Transcript) -> None:
    chat = sample_chat
    await chat.say("/sample", as_=FP_CHILE)
    await chat.say(as_=FP_CHILE, value="sample",
                   values={"kind": "bogus", "title": "", "link": "ftp://x", "when": "2018-02-30"})
    assert chat.keys == ["forms.invalid"]
    assert set(chat.last().errors) == {"kind", "title", "link", "when"}
    await chat.say(as_=FP_CHILE, value="sample",
                   values={"kind": "event", "title": "Berlin", "link": "", "when": "2018-04-09"})
    assert "'Berlin'" in submitted(chat)


async def test_a_whole_form_that_is_not_open_is_refused(sample_chat: Transcript) -> None:
    await sample_chat.say(as_=FP_CHILE, value="review_note", values={"note": "forged"})
    assert sample_chat.keys == ["forms.stale_modal"]
    await sample_chat.say("/sample", as_=FP_CHILE)
    version = sample_chat.last().step.version if sample_chat.last().step else 0
    await sample_chat.say(as_=FP_CHILE, value="sample", form_version=version + 1,
                          values={"kind": "event", "title": "x", "link": "", "when": "2018-04-09"})
    assert sample_chat.keys == ["forms.stale_modal"]


async def test_an_old_button_never_fits_a_new_form(sample_chat: Transcript) -> None:
    chat = sample_chat
    await chat.say("/sample", as_=FP_CHILE)
    old = chat.last().step
    assert old is not None
    await chat.say("/cancel", as_=FP_CHILE)
    await chat.say("/sample", as_=FP_CHILE)
    await chat.say(as_=FP_CHILE, action="answer", value="1", form_version=old.version)
    assert chat.keys == ["forms.stale", "forms.question"]
    await chat.say(as_=FP_CHILE, action="cancel", form_version=old.version)
    assert chat.keys == ["forms.stale"]


async def test_an_answer_with_no_open_form_is_explained(chat: Transcript) -> None:
    await chat.say(as_=FP_CHILE, action="answer", value="1", form_version=3)
    assert chat.keys == ["forms.none_open"]
