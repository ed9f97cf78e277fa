"""Newsletter: the less common replies and draft passages, each reached as the secretariat would.

Closing an edition for drafting; a published edition in the list; /newsletter with nothing to
compile; an item moved to another edition; an unapproved update refused; a draft with no
spotlight and no NAP change, and one whose item has attachments; a civil society partner whose
role went away while the form was open. Chat replies are read in plain text, Telegram HTML and
Slack mrkdwn; drafts in the files the bot sends (HTML, Markdown, Word).
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select

from handlers.clock import FrozenClock
from handlers.types import Attachment
from storage.db import Database
from storage.edition_demo import load_demo_edition
from storage.models import NationalUpdate, Person, Role
from tests.conftest import COORDINATOR, FP_CHILE, Transcript
from tests.test_newsletter import docx_text, visible_text

FORMATS = ("plain", "html", "mrkdwn")
WILPF = "wilpf@demo.invalid"
DEMO_TITLE = "National action plans, and the road to Berlin"
EDITION_TWO = ("Edition two", "2018-03-16", "2018-05-31", "2018-05-15", "2018-05-20", "en")


@pytest.fixture
async def edition_db(demo_db: Database, clock: FrozenClock) -> Database:
    """The demo store with newsletter edition 1 and its demo updates."""
    async with demo_db.transaction() as session:
        assert await load_demo_edition(session, clock.now()) is not None
    return demo_db


def read(chat: Transcript, index: int = -1) -> dict[str, str]:
    """One reply as a person reads it on each platform (every format must render)."""
    texts = {fmt: chat.text(index, fmt) for fmt in FORMATS}
    assert all(t.strip() for t in texts.values()), texts
    return texts


async def new_edition(chat: Transcript, answers: tuple[str, ...] = EDITION_TWO) -> int:
    await chat.say("/edition new", as_=COORDINATOR)
    for answer in answers:
        await chat.say(answer, as_=COORDINATOR)
    assert chat.keys == ["newsletter.created"], chat.keys
    return int(chat.last().context["number"])


async def file_update(chat: Transcript, title: str, *,
                      attachments: tuple[Attachment, ...] = ()) -> int:
    """Chile's focal point files a public policy update, with files if given."""
    await chat.say("/update", as_=FP_CHILE)
    for answer in ("policy", title, "A text about it.", "-"):
        await chat.say(answer, as_=FP_CHILE)
    if attachments:
        await chat.say("", as_=FP_CHILE, attachments=attachments)
    for answer in ("-", "public"):
        await chat.say(answer, as_=FP_CHILE)
    assert chat.keys == ["updates.filed"], chat.keys
    return int(chat.last().context["id"])


async def draft_files(chat: Transcript, number: int) -> dict[str, str]:
    """The draft of edition `number` as the bot sends it, each file as a person reads it."""
    out = {}
    for fmt in ("html", "md", "docx"):
        await chat.say(f"/newsletter {number} {fmt}", as_=COORDINATOR)
        assert chat.keys == ["newsletter.draft_sent"], chat.keys
        file = chat.last().file
        assert file is not None
        out[fmt] = {"html": lambda b: visible_text(b.decode()), "md": lambda b: b.decode(),
                    "docx": docx_text}[fmt](file.content)
    return out


async def item_id(db: Database, title_start: str) -> int:
    async with db.transaction() as session:
        found = await session.scalar(select(NationalUpdate.id).where(
            NationalUpdate.title.startswith(title_start)))
        assert found is not None
        return found


# -- the edition's life ----------------------------------------------------------------------
async def test_closing_an_edition_puts_it_in_drafting_and_says_where_approvals_go(
        chat: Transcript, edition_db: Database) -> None:
    second = await new_edition(chat)
    await chat.say("/edition 1 close", as_=COORDINATOR)
    assert read(chat)["plain"] == ("Edition 1 is closed for new items and in drafting. New "
                                   f"approvals go to edition {second}.")
    await chat.say("/editions", as_=COORDINATOR)
    listing = read(chat)["plain"]
    assert f"#1 {DEMO_TITLE} · drafting · 8 public items + 1 network-only · deadline 15 March 2018" in listing
    assert f"#{second} Edition two · collecting · 0 items" in listing
    await chat.say("/edition 1", as_=COORDINATOR)
    shown = read(chat)
    assert shown["plain"].startswith(f"Edition 1 · {DEMO_TITLE} · drafting\n")
    assert f"<b>Edition 1 · {DEMO_TITLE}</b> · drafting" in shown["html"]
    # A drafting edition can still be arranged, but new approvals go to the collecting one.
    item = await file_update(chat, "Women generals: a regulation approved")
    await chat.say(f"/review approve {item}", as_=COORDINATOR)
    assert f"in newsletter edition {second}" in read(chat)["plain"]
    await chat.say(f"/edition {second} close", as_=COORDINATOR)
    assert read(chat)["plain"] == (f"Edition {second} is closed for new items and in drafting. "
                                   "New approvals go to no edition until you start one with "
                                   "/edition new.")


async def test_a_published_edition_is_listed_so_and_nothing_is_left_to_compile(
        chat: Transcript, edition_db: Database) -> None:
    await chat.say("/edition 1 publish", as_=COORDINATOR)
    assert chat.keys == ["newsletter.published"]
    await chat.say("/editions", as_=COORDINATOR)
    assert read(chat)["plain"].splitlines()[1] == (
        f"#1 {DEMO_TITLE} · published · 8 public items + 1 network-only · deadline 15 March 2018 · published "
        "1 March 2018")
    for command in ("/newsletter", "/newsletter md", "/newsletter preview"):
        await chat.say(command, as_=COORDINATOR)
        assert chat.keys == ["newsletter.no_edition"], command
        assert read(chat)["plain"] == ("There is no edition to compile yet. Start one with "
                                       "/edition new.")
        assert chat.last().file is None
    await chat.say("/newsletter 1 md", as_=COORDINATOR)  # the published one, by its number
    assert chat.keys == ["newsletter.draft_sent"]


async def test_newsletter_before_any_edition_says_to_start_one(
        chat: Transcript, demo_db: Database) -> None:
    await chat.say("/newsletter docx", as_=COORDINATOR)
    assert chat.keys == ["newsletter.no_edition"]
    assert "Start one with /edition new." in read(chat)["plain"]


async def test_an_item_moves_to_another_edition(chat: Transcript, edition_db: Database) -> None:
    second = await new_edition(chat)
    toolkit = await item_id(edition_db, "A toolkit")
    await chat.say(f"/edition 1 move {toolkit} edition:{second}", as_=COORDINATOR)
    assert read(chat)["plain"] == f"#{toolkit} moved from edition 1 to edition {second}."
    await chat.say(f"/edition {second}", as_=COORDINATOR)
    assert f"#{toolkit} A toolkit" in read(chat)["plain"]
    await chat.say("/edition 1", as_=COORDINATOR)
    assert f"#{toolkit} " not in read(chat)["plain"]
    await chat.say(f"/edition {second} move {toolkit} edition:9", as_=COORDINATOR)
    assert chat.keys == ["newsletter.unknown_edition"]


async def test_an_update_not_approved_cannot_be_put_in_an_edition(
        chat: Transcript, edition_db: Database) -> None:
    item = await file_update(chat, "Still in review")
    await chat.say(f"/edition 1 add {item} knowledge", as_=COORDINATOR)
    assert chat.keys == ["newsletter.not_approved"]
    assert read(chat)["plain"] == (f"#{item} is waiting for review: only approved updates go "
                                   "in an edition.")
    async with edition_db.transaction() as session:
        row = await session.get(NationalUpdate, item)
        assert row is not None and row.edition_id is None and row.section != "knowledge"


# -- what a draft says -----------------------------------------------------------------------
async def test_a_draft_without_member_material_or_nap_changes_says_so(
        chat: Transcript, demo_db: Database) -> None:
    number = await new_edition(chat, ("January 2018", "2018-01-01", "2018-01-31", "2018-02-05",
                                      "2018-02-10", "en"))
    await chat.say("/update", as_=WILPF)  # a civil society voice: attributed to no member
    for answer in ("WILPF Sweden", "Local mediators in the Sahel",
                   "Women mediators met in Bamako.", "-", "public"):
        await chat.say(answer, as_=WILPF)
    voice = int(chat.last().context["id"])
    await chat.say(f"/review approve {voice}", as_=COORDINATOR)
    none = ("No member has material in this edition yet; choose one with "
            f"/edition {number} spotlight MEMBER.")
    unchanged = "No NAP status changed in this period."
    files = await draft_files(chat, number)
    assert f"*{none}*" in files["md"] and f"*{unchanged}*" in files["md"]
    assert none in files["html"] and unchanged in files["html"]
    assert f"[Normal] {none}" in files["docx"] and f"[Normal] {unchanged}" in files["docx"]
    assert "Local mediators in the Sahel" in files["md"]
    # Choosing a spotlight, as the sentence says, fills the section.
    await chat.say(f"/edition {number} spotlight Chile", as_=COORDINATOR)
    files = await draft_files(chat, number)
    assert none not in files["md"] and "### Chile\n\nThis edition's spotlight is on Chile" in \
        files["md"]


async def test_an_items_attachments_are_listed_under_it_in_the_draft(
        chat: Transcript, edition_db: Database) -> None:
    report = Attachment(file_id="f3", name="indicators-2018.pdf", size=120_000,
                        mime_type="application/pdf")
    item = await file_update(chat, "Indicators for the second plan", attachments=(report,))
    await chat.say(f"/review approve {item}", as_=COORDINATOR)
    files = await draft_files(chat, 1)
    entry = files["md"].split("### Indicators for the second plan", 1)[1].split("\n#", 1)[0]
    assert entry.strip() == "**Chile**\n\nA text about it.\n\nAttached:\n\n- indicators-2018.pdf"
    assert "Attached indicators-2018.pdf" in files["html"]
    assert "[Heading 4] Attached\n[List Bullet] indicators-2018.pdf" in files["docx"]
    # An item without files has no such list.
    assert files["md"].count("Attached:") == 1


# -- a role that went away while the form was open -------------------------------------------
async def test_a_partner_no_longer_civil_society_cannot_file_the_voice_they_began(
        chat: Transcript, demo_db: Database) -> None:
    """Roles change outside the bot (the roster is edited); the form opened before."""
    await chat.say("/update", as_=WILPF)
    assert chat.last().step is not None and chat.last().step.form == "voice"
    for answer in ("WILPF Sweden", "Local mediators in the Sahel",
                   "Women mediators met in Bamako.", "-"):
        await chat.say(answer, as_=WILPF)
    async with demo_db.transaction() as session:
        wilpf = await session.scalar(select(Person.id).where(Person.email == WILPF))
        await session.execute(delete(Role).where(Role.person_id == wilpf))
    await chat.say("public", as_=WILPF)
    assert chat.keys == ["newsletter.voice_only"]
    assert read(chat)["plain"] == ("Civil society partners file newsletter contributions with "
                                   "/update; other updates are filed by focal points.")
    async with demo_db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(NationalUpdate).where(
            NationalUpdate.title == "Local mediators in the Sahel")) == 0
