"""Replies no other test reached: wrong arguments, rare roles, limits, the console's own lines.

Each is said by the bot (through the core or an adapter) and read as a person reads it.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from bot.adapters.console import ConsoleAdapter
from handlers import COMMANDS, FORMS, FREE_TEXT
from handlers.clock import FrozenClock
from handlers.dispatch import Core
from handlers.routing import Access, Command
from handlers.types import Attachment, Incoming, OutFile, Outgoing
from messages import Renderer
from storage.db import Database
from storage.models import Conversation, Member, NationalUpdate, Person, Role, RoleName
from tests.conftest import COORDINATOR, FP_CHILE, Transcript
from tests.test_updates import WILPF, file_update

PDF = "application/pdf"


async def _also_focal_point_of(db: Database, email: str, member_code: str) -> None:
    async with db.transaction() as session:
        person = await session.scalar(select(Person).where(Person.email == email))
        member = await session.scalar(select(Member).where(Member.code == member_code))
        assert person is not None and member is not None
        session.add(Role(person_id=person.id, member_id=member.id, role=RoleName.FOCAL_POINT))


# -- filing updates -------------------------------------------------------------------------
async def test_who_may_file_and_for_which_member(chat: Transcript, demo_db: Database) -> None:
    await chat.say("/update", as_=WILPF)  # civil society files a voice of its own
    assert chat.text().startswith("Civil society voice for the newsletter · 1/5")
    await chat.say("/cancel", as_=WILPF)
    async with demo_db.transaction() as session:  # a person with no role left
        wilpf = await session.scalar(select(Person).where(Person.email == WILPF))
        assert wilpf is not None
        await session.execute(delete(Role).where(Role.person_id == wilpf.id))
    await chat.say("/update", as_=WILPF)
    assert "Only focal points and alternates file national updates" in chat.text()
    await chat.say("/update", as_=COORDINATOR)
    assert "Say for which member you are filing, for example: /update Chile" in chat.text()
    await chat.say("/update Atlantis", as_=FP_CHILE)
    assert "I don't know a member called “Atlantis”" in chat.text()
    await _also_focal_point_of(demo_db, FP_CHILE, "germany")
    await chat.say("/update", as_=FP_CHILE)
    assert chat.text().splitlines()[1] == "For which member is this update?"
    assert [c.label for c in chat.last().choices] == ["Chile", "Germany"]


async def test_links_and_files_keep_their_limits(chat: Transcript) -> None:
    await chat.say("/update", as_=FP_CHILE)
    for answer in ("nap_progress", "Chile's second NAP", "Progress indicators for each objective."):
        await chat.say(answer, as_=FP_CHILE)
    await chat.say(" ".join(f"https://example.org/{n}" for n in range(6)), as_=FP_CHILE)
    assert "At most 5 links, please." in chat.text()
    await chat.say("https://www.minrel.gob.cl/nap", as_=FP_CHILE)
    await chat.say("the report", as_=FP_CHILE)  # text where files are asked for
    assert "Send files here, or - when you are done." in chat.text()
    files = tuple(Attachment(f"f{n}", f"report-{n}.pdf", 1000, PDF) for n in range(6))
    await chat.say("", as_=FP_CHILE, attachments=files)
    assert "That is more than 5 files; send a link for the rest." in chat.text()


async def test_a_published_update_says_so(chat: Transcript, demo_db: Database) -> None:
    update_id = await file_update(chat)
    async with demo_db.transaction() as session:  # the newsletter went out with it
        row = await session.get(NationalUpdate, update_id)
        assert row is not None
        row.status = "published"
    await chat.say(f"/edit {update_id}", as_=FP_CHILE)
    assert f"#{update_id}" in chat.text() and "published" in chat.text()


async def test_an_edit_overtaken_by_another_edit_saves_nothing(chat: Transcript) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/edit {update_id}", as_=FP_CHILE)
    for answer in ("-", "Chile's NAP: first indicators", "-", "-", "-"):
        await chat.say(answer, as_=FP_CHILE)
    await chat.say(f"/edit {update_id}", as_=COORDINATOR)  # the secretariat edits it meanwhile
    for answer in ("-", "Chile sets NAP indicators", "-", "-", "-", "-"):
        await chat.say(answer, as_=COORDINATOR)
    assert chat.keys == ["updates.edited"]
    await chat.say("-", as_=FP_CHILE)  # the last step of the first edit
    assert chat.text() == (f"Update #{update_id} changed while you were editing it; nothing "
                           f"was saved. Open it again with /edit {update_id}.")


# -- review ---------------------------------------------------------------------------------
async def test_review_explains_wrong_verbs_numbers_and_sections(chat: Transcript) -> None:
    await chat.say("/review promote 1", as_=COORDINATOR)
    assert chat.text().startswith("Use /review to see the next update")
    await chat.say("/review approve 999", as_=COORDINATOR)
    assert "There is no update #999 that you can see." in chat.text()
    update_id = await file_update(chat)
    await chat.say(f"/review approve {update_id} gossip", as_=COORDINATOR)
    assert "There is no section “gossip”. Sections: " in chat.text()


async def test_review_offers_every_section_then_the_next_update(chat: Transcript) -> None:
    first = await file_update(chat)
    await file_update(chat, title="Chile trains 200 peacekeepers")
    await chat.say(f"/review sections {first}", as_=COORDINATOR)
    assert f"In which newsletter section should #{first}" in chat.text()
    labels = [c.label for c in chat.last().choices]
    assert len(labels) == 10 and "From the Network" in labels and "Upcoming events" in labels
    await chat.say(chat.last().choices[0].value, as_=COORDINATOR)
    assert [c.label for c in chat.last().choices] == ["Next"]


# -- NAP status, search, onboarding ------------------------------------------------------------
async def test_someone_of_two_members_is_asked_which(chat: Transcript, demo_db: Database) -> None:
    await _also_focal_point_of(demo_db, FP_CHILE, "germany")
    await chat.say("/nap update", as_=FP_CHILE)
    assert chat.text() == "Which member's NAP status do you want to update?"
    assert [c.value for c in chat.last().choices] == ["/nap update chile", "/nap update germany"]


async def test_a_nap_form_that_lost_its_member_saves_nothing(chat: Transcript,
                                                              demo_db: Database) -> None:
    await chat.say("/nap update", as_=FP_CHILE)
    async with demo_db.transaction() as session:  # left over from a version that kept no member
        conv = await session.scalar(select(Conversation))
        assert conv is not None and conv.form == "nap"
        conv.answers = {k: v for k, v in conv.answers.items() if k != "member"}
    for answer in ("in_development", "-", "-", "no", "no", "no"):
        await chat.say(answer, as_=FP_CHILE)
    assert chat.text().startswith("I've lost track of which member this update was for")


async def test_search_names_what_it_does_not_know(chat: Transcript) -> None:
    await chat.say("/search indicators category:gossip", as_=FP_CHILE)
    assert chat.text().startswith("Unknown category. Categories: ")
    await chat.say("/search indicators member:Atlantis", as_=FP_CHILE)
    assert "I don't know a member called “Atlantis”" in chat.text()


async def test_a_persons_own_code_on_their_own_account_changes_nothing(chat: Transcript) -> None:
    await chat.say("/link", as_=FP_CHILE)
    code = chat.last().context["one_time_code"]
    await chat.say(f"/start {code}", as_=FP_CHILE)
    assert chat.text() == "This account is already linked to you, Catalina Rojas (demo)."


async def test_a_bug_gets_one_apology_and_a_logged_traceback(
        demo_db: Database, clock: FrozenClock, renderer: Renderer,
        caplog: pytest.LogCaptureFixture) -> None:
    async def broken(msg: Incoming, ctx: object) -> list[Outgoing]:
        raise RuntimeError("a bug")

    core = Core(demo_db, (*COMMANDS, Command("crash", broken, Access.ANYONE, "help.help")), FORMS,
                clock=clock, renderer=renderer, free_text=FREE_TEXT)
    chat = Transcript(core, renderer)
    with caplog.at_level(logging.ERROR):
        await chat.say("/crash", as_=FP_CHILE)
    assert chat.text().startswith("Sorry, something went wrong on my side")
    assert "RuntimeError: a bug" in caplog.text


# -- the console's own lines ------------------------------------------------------------------
class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_the_console_shows_prompts_controls_notices_and_files(
        core: Core, renderer: Renderer, tmp_path: Path) -> None:
    person = await core.console_identity(FP_CHILE)
    assert person is not None
    out = io.StringIO()
    console = ConsoleAdapter(core, renderer, user=person.email, display_name=person.name,
                             stdin=Terminal("/update\n/quit\n"), stdout=out,
                             files_dir=tmp_path / "files")
    assert console.banner() == ("Focal Points Bot console, as Catalina Rojas (demo) "
                                "<fp.chile@demo.invalid>. Try /help; Ctrl-D leaves.")
    await console.run()
    assert out.getvalue().startswith("you> ")
    assert "(/cancel)" in out.getvalue()  # the first step of a form: no Back, no Skip
    await console.send(person.email, Outgoing("review.next_button"), locale="en", tz="UTC")
    console.show([Outgoing("forms.back", file=OutFile("nap.csv", "text/csv", b"a,b\n"))])
    lines = out.getvalue().splitlines()
    assert "you> [notice]" in lines and "Next" in lines  # after the prompt /quit left
    saved = tmp_path / "files" / "nap.csv"
    assert f"  [file nap.csv, 4 bytes, saved as {saved}]" in lines
    assert saved.read_bytes() == b"a,b\n"
