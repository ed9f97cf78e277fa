"""Newsletter editions in chat: create, show, move, spotlight, compile, publish; civil society voices."""

from __future__ import annotations

import io

import pytest
from docx import Document
from sqlalchemy import select

from handlers.clock import FrozenClock
from handlers.dispatch import Core
from handlers.types import Outgoing
from messages import Renderer
from storage import editions
from storage.db import Database
from storage.edition_demo import load_demo_edition
from storage.models import (
    EditionStatus,
    Member,
    NapStatus,
    NationalUpdate,
    OutboxItem,
    Spotlight,
    UpdateStatus,
)
from tests.conftest import COORDINATOR, FP_CHILE
from tests.conftest import Transcript as BaseTranscript

WILPF = "wilpf@demo.invalid"
FORMATS = ("plain", "html", "mrkdwn")


class Transcript(BaseTranscript):
    """A transcript that renders every reply on every platform as it arrives."""

    async def say(self, text: str = "", **kwargs: object) -> list[Outgoing]:
        replies = await super().say(text, **kwargs)  # type: ignore[arg-type]
        for index in range(len(replies)):
            for fmt in FORMATS:
                assert self.text(index, fmt).strip(), (replies[index].key, fmt)
        return replies


@pytest.fixture
def chat(core: Core, renderer: Renderer) -> Transcript:
    return Transcript(core, renderer)


@pytest.fixture
async def edition_db(demo_db: Database, clock: FrozenClock) -> Database:
    async with demo_db.transaction() as session:
        assert await load_demo_edition(session, clock.now()) is not None
    return demo_db


def texts(chat: Transcript, index: int = -1) -> dict[str, str]:
    """One reply as a person reads it on each platform."""
    return {fmt: chat.text(index, fmt) for fmt in FORMATS}


async def file_update(chat: Transcript, title: str, who: str = FP_CHILE,
                      visibility: str = "public") -> int:
    await chat.say("/update", as_=who)
    for answer in ("policy", title, "A text about it.", "-", "-", visibility):
        await chat.say(answer, as_=who)
    assert chat.keys == ["updates.filed"], chat.keys
    return int(chat.last().context["id"])


async def test_the_secretariat_creates_an_edition_step_by_step(chat: Transcript,
                                                               demo_db: Database) -> None:
    await chat.say("/edition new", as_=COORDINATOR)
    assert chat.last().step is not None and chat.last().step.field.name == "title"
    for answer in ("October 2017", "2017-09-01", "2017-10-31"):
        await chat.say(answer, as_=COORDINATOR)
    await chat.say("31 October", as_=COORDINATOR)  # not a date: asked again, nothing lost
    assert chat.last().step is not None and chat.last().step.field.name == "deadline"
    assert chat.last().errors
    for answer in ("2017-10-15", "2017-10-20", "en"):
        await chat.say(answer, as_=COORDINATOR)
    assert chat.keys == ["newsletter.created"], chat.keys
    shown = texts(chat)
    assert "Edition 1, October 2017, is collecting: approved updates go into it until " \
           "15 October 2017." in shown["plain"]
    assert "<b>October 2017</b>" in shown["html"] and "*October 2017*" in shown["mrkdwn"]
    async with demo_db.transaction() as session:
        edition = await editions.collecting(session)
        assert edition is not None and edition.number == 1
        # The deadline is the end of that day, stored in UTC, for the reminders to count down to.
        assert edition.submission_deadline.isoformat() == "2017-10-15T23:59:59+00:00"


async def test_an_edition_whose_dates_do_not_fit_is_refused_clearly(chat: Transcript) -> None:
    await chat.say("/edition new", as_=COORDINATOR)
    for answer in ("Bad", "2017-10-31", "2017-09-01", "2017-10-15", "2017-10-20", "en"):
        await chat.say(answer, as_=COORDINATOR)
    assert chat.keys == ["newsletter.bad_order"]
    assert "the period must end after it starts" in chat.text()


async def test_focal_points_cannot_run_editions(chat: Transcript, edition_db: Database) -> None:
    for command in ("/edition 1", "/editions", "/newsletter 1 html"):
        await chat.say(command, as_=FP_CHILE)
        assert chat.keys == ["errors.secretariat_only"], command


async def test_an_edition_lists_its_items_by_section_with_counts(chat: Transcript,
                                                                edition_db: Database) -> None:
    await chat.say("/edition 1", as_=COORDINATOR)
    shown = texts(chat)
    plain = shown["plain"]
    assert "Spotlight: Chile (chosen)" in plain
    assert "National action plan progress (2)" in plain
    assert "Knowledge products (2)" in plain
    assert "network only, not in the public edition" in plain
    assert "Namibia" not in plain and "withdrawn" not in plain
    assert "<b>National action plan progress</b> (2)" in shown["html"]
    await chat.say("/editions", as_=COORDINATOR)
    assert "8 public items + 1 network-only\n" in plain  # the counts /editions gives
    assert "#1 National action plans, and the road to Berlin · collecting · 8 public items " \
           "+ 1 network-only · deadline 15 March 2018" in chat.text()


async def test_approved_updates_go_to_the_collecting_edition_or_the_one_chosen(
        chat: Transcript, edition_db: Database) -> None:
    first = await file_update(chat, "Women generals: a regulation approved")
    await chat.say(f"/review approve {first}", as_=COORDINATOR)
    assert f"Approved #{first} for Innovation in policy and practice in newsletter edition 1" in chat.text()
    await chat.say("/edition new", as_=COORDINATOR)
    for answer in ("Edition two", "2018-03-16", "2018-05-31", "2018-05-15", "2018-05-20", "en"):
        await chat.say(answer, as_=COORDINATOR)
    second = await file_update(chat, "A second item, for later")
    await chat.say(f"/review approve {second} lessons edition:2", as_=COORDINATOR)
    shown = texts(chat)
    assert "for Best practices and lessons learned in newsletter edition 2" in shown["plain"]
    third = await file_update(chat, "A third item")
    await chat.say(f"/review approve {third} edition:9", as_=COORDINATOR)
    assert chat.keys == ["newsletter.unknown_edition"] and "no edition 9" in chat.text()
    async with edition_db.transaction() as session:
        rows = {r.id: r for r in await session.scalars(select(NationalUpdate))}
        one, two = await editions.by_number(session, 1), await editions.by_number(session, 2)
        assert one is not None and two is not None
        assert (rows[first].edition_id, rows[second].edition_id) == (one.id, two.id)
        assert rows[third].status == UpdateStatus.SUBMITTED  # nothing decided
    told = await outbox_texts(edition_db, "review.told_approved")
    assert any("of edition 1" in t for t in told)


async def outbox_texts(db: Database, key: str) -> list[str]:
    async with db.transaction() as session:
        items = list(await session.scalars(select(OutboxItem).order_by(OutboxItem.id)))
    return [Renderer().render(i.message["key"], "en", "plain", **i.message["context"])
            for i in items if i.message["key"] == key]


async def test_items_move_between_sections_and_editions_or_drop_out(
        chat: Transcript, edition_db: Database) -> None:
    async with edition_db.transaction() as session:
        toolkit = await session.scalar(select(NationalUpdate.id).where(
            NationalUpdate.title.startswith("A toolkit")))
    await chat.say(f"/edition 1 move {toolkit} lessons", as_=COORDINATOR)
    assert chat.text() == f"#{toolkit} now goes in “Best practices and lessons learned” of " \
                          "edition 1."
    await chat.say(f"/edition 1 move {toolkit} nowhere", as_=COORDINATOR)
    assert chat.keys == ["newsletter.unknown_section"]
    await chat.say(f"/edition 1 drop {toolkit}", as_=COORDINATOR)
    assert chat.keys == ["newsletter.dropped"]
    await chat.say("/newsletter 1 md", as_=COORDINATOR)
    assert b"A toolkit" not in chat.last().file.content  # type: ignore[union-attr]
    await chat.say(f"/edition 1 add {toolkit} knowledge", as_=COORDINATOR)
    assert "is now in edition 1, section “Knowledge products”" in chat.text()
    await chat.say("/edition 1 drop 999", as_=COORDINATOR)
    assert chat.keys == ["newsletter.not_in_edition"]
    await chat.say("/edition 7", as_=COORDINATOR)
    assert chat.keys == ["newsletter.unknown_edition"]
    await chat.say("/edition 1 dance", as_=COORDINATOR)
    assert chat.keys == ["newsletter.edition_usage"]


async def test_the_draft_comes_as_a_file_in_each_format(chat: Transcript,
                                                         edition_db: Database) -> None:
    expected = {"html": ("text/html", b"<!DOCTYPE html>"), "md": ("text/markdown", b"# News"),
                "docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml."
                         "document", b"PK")}
    for fmt, (mime, start) in expected.items():
        await chat.say(f"/newsletter 1 {fmt}", as_=COORDINATOR)
        out = chat.last()
        assert out.file is not None and out.file.mime_type == mime
        assert out.file.content.startswith(start)
        assert out.file.name == f"newsletter-edition-1-draft-1.{fmt}"
        shown = texts(chat)
        assert f"Draft 1 of edition 1 (National action plans, and the road to Berlin), {fmt}: " \
               "8 items" in shown["plain"]
    assert "unchanged since the last draft" in chat.text()
    docx = chat.last().file
    assert docx is not None
    props = Document(io.BytesIO(docx.content)).core_properties  # Word's File > Info
    assert props.author == props.last_modified_by == (
        "Secretariat of the Women, Peace and Security Focal Points Network (UN-Women)")
    assert props.title == "Newsletter · National action plans, and the road to Berlin"
    assert props.created == props.modified == chat.core.clock.now().replace(microsecond=0)
    assert "python-docx" not in f"{props.author} {props.comments} {props.last_modified_by}"
    await chat.say("/newsletter", as_=COORDINATOR)  # the collecting edition, HTML
    assert chat.last().file is not None and chat.last().file.name.endswith(".html")
    await chat.say("/newsletter 1 pdf", as_=COORDINATOR)
    assert chat.keys == ["newsletter.newsletter_usage"]


async def test_a_preview_link_needs_the_server_secret(chat: Transcript,
                                                      edition_db: Database) -> None:
    await chat.say("/newsletter 1 preview", as_=COORDINATOR)
    assert chat.keys == ["newsletter.preview_unconfigured"]
    assert "FPBOT_SECRET_KEY" in chat.text()


async def test_publishing_freezes_tells_the_authors_and_archives(
        chat: Transcript, edition_db: Database, clock: FrozenClock) -> None:
    async with edition_db.transaction() as session:
        chile_item = await session.scalar(select(NationalUpdate.id).where(
            NationalUpdate.title.startswith("Progress indicators")))
    await chat.say("/newsletter archive", as_=COORDINATOR)
    assert chat.text() == "No edition has been published yet."
    await chat.say("/edition 1 publish", as_=COORDINATOR)
    assert chat.text() == "Edition 1 is published and archived: 8 items frozen, 3 authors told."
    async with edition_db.transaction() as session:
        edition = await editions.by_number(session, 1)
        assert edition is not None and edition.status == EditionStatus.PUBLISHED
        rows = await editions.items(session, edition.id)
        assert {r.status for r in rows} == {UpdateStatus.PUBLISHED}
        spot = await session.scalar(select(Spotlight))
        assert spot is not None and spot.featured_at == clock.now()
        final = await editions.latest_draft(session, edition.id)
        assert final is not None and final.final and "<!DOCTYPE html>" in final.html
    told = await outbox_texts(edition_db, "newsletter.told_published")
    assert f"Your update #{chile_item}, Progress indicators in Chile's second national action plan, was " \
           "published in edition 1" in "\n".join(told)
    # Frozen: the author can no longer edit or withdraw, the secretariat no longer move.
    await chat.say(f"/edit {chile_item}", as_=FP_CHILE)
    assert chat.keys == ["updates.not_editable"]
    await chat.say(f"/withdraw {chile_item}", as_=FP_CHILE)
    assert chat.keys == ["updates.not_editable"]
    await chat.say(f"/edition 1 drop {chile_item}", as_=COORDINATOR)
    assert chat.keys == ["newsletter.frozen"]
    await chat.say("/edition 1 publish", as_=COORDINATOR)
    assert chat.keys == ["newsletter.frozen"]
    await chat.say("/newsletter archive", as_=COORDINATOR)
    shown = texts(chat)
    assert "#1 National action plans, and the road to Berlin · published 1 March 2018 · 8 items" \
           in shown["plain"]
    assert "<b>Newsletter archive</b>" in shown["html"]
    # The archive gives the edition as published, and opens no new draft.
    published_html = final.html
    async with edition_db.transaction() as session:  # the NAP totals move on afterwards
        japan = await session.scalar(select(Member).where(Member.code == "japan"))
        assert japan is not None
        session.add(NapStatus(member_id=japan.id, stage="adopted", plan_number=2,
                              updated_at=clock.now()))
    await chat.say("/newsletter 1 html", as_=COORDINATOR)
    assert chat.last().file is not None
    assert chat.last().file.content.decode() == published_html
    assert chat.last().file.name == "newsletter-edition-1-draft-1.html"
    await chat.say("/newsletter 1 md", as_=COORDINATOR)
    assert chat.last().file is not None and chat.last().file.name.endswith("draft-1.md")
    async with edition_db.transaction() as session:
        assert len(await editions.drafts(session, edition.id)) == 1


async def test_an_empty_edition_cannot_be_published(chat: Transcript, demo_db: Database) -> None:
    await chat.say("/edition new", as_=COORDINATOR)
    for answer in ("Empty", "2018-01-01", "2018-02-28", "2018-02-15", "2018-02-20", "en"):
        await chat.say(answer, as_=COORDINATOR)
    await chat.say("/edition 1 publish", as_=COORDINATOR)
    assert chat.keys == ["newsletter.publish_empty"]


async def test_the_spotlight_can_be_chosen(chat: Transcript, edition_db: Database) -> None:
    await chat.say("/edition 1 spotlight Brasil", as_=COORDINATOR)
    assert chat.text() == "The spotlight of edition 1 is now on Brazil."
    await chat.say("/newsletter 1 md", as_=COORDINATOR)
    assert b"### Brazil\n\nThis edition's spotlight is on Brazil" in \
        chat.last().file.content  # type: ignore[union-attr]
    await chat.say("/edition 1 spotlight Atlantis", as_=COORDINATOR)
    assert chat.keys == ["forms.unknown_member"]


async def test_civil_society_files_a_voice_attributed_to_its_organisation(
        chat: Transcript, edition_db: Database) -> None:
    await chat.say("/update", as_=WILPF)
    step = chat.last().step
    assert step is not None and step.form == "voice" and step.field.value == \
        "Women's International League for Peace and Freedom"
    for answer in ("WILPF Sweden", "Local mediators in the Sahel",
                   "Women mediators met in Bamako.", "-", "public"):
        await chat.say(answer, as_=WILPF)
    assert chat.keys == ["newsletter.voice_filed"]
    shown = texts(chat)
    assert "filed for WILPF Sweden and waits for the secretariat's review" in shown["plain"]
    voice = int(chat.last().context["id"])
    told = "\n".join(await outbox_texts(edition_db, "updates.for_review"))
    assert "to review · WILPF Sweden · Civil society voice · Public (newsletter)" in told
    await chat.say(f"/review approve {voice}", as_=COORDINATOR)  # its default section
    assert "Civil society voices in newsletter edition 1" in chat.text()
    await chat.say("/newsletter 1 md", as_=COORDINATOR)
    md = chat.last().file.content.decode()  # type: ignore[union-attr]
    section = md.split("## Civil society voices", 1)[1].split("\n## ", 1)[0]
    assert "### Local mediators in the Sahel\n\n**WILPF Sweden · civil society**" in section
    await chat.say("/myupdates", as_=WILPF)
    assert "Local mediators in the Sahel" in chat.text()
    await chat.say(f"/edit {voice}", as_=WILPF)
    assert chat.last().step is not None and chat.last().step.form == "voice"


async def test_other_people_without_a_member_still_cannot_file(chat: Transcript,
                                                               demo_db: Database) -> None:
    await chat.say("/update", as_=WILPF)
    await chat.say("/cancel", as_=WILPF)
    await chat.say("/update", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.form == "update"


async def test_hostile_titles_are_escaped_in_chat_replies(chat: Transcript,
                                                          edition_db: Database) -> None:
    hostile = '<script>x</script> "><img onerror=y> {{ 7*7 }} *b* _i_ <!channel> &amp;'
    item = await file_update(chat, hostile)
    await chat.say(f"/review approve {item}", as_=COORDINATOR)
    await chat.say("/edition 1", as_=COORDINATOR)
    shown = texts(chat)
    assert hostile in shown["plain"]
    assert "&lt;script&gt;x&lt;/script&gt; &quot;&gt;&lt;img onerror=y&gt; {{ 7*7 }}" in shown["html"]
    assert "<script>" not in shown["html"] and "<img" not in shown["html"]
    assert "&lt;script&gt;x&lt;/script&gt; \"&gt;&lt;img onerror=y&gt; {{ 7*7 }} *b* _i_ " \
           "&lt;!channel&gt; &amp;amp;" in shown["mrkdwn"]
    assert "<!channel>" not in shown["mrkdwn"]
