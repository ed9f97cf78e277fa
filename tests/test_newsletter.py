"""Newsletter drafts: what goes in (and what never does), attribution, escaping, the three formats.

Golden files live in tests/golden/newsletter/; regenerate them with UPDATE_GOLDEN=1 after a
deliberate change, and read the diff.
"""

from __future__ import annotations

import gc
import io
import os
from pathlib import Path

import html5lib
import pytest
from docx import Document
from docx.table import Table
from markdown_it import MarkdownIt
from sqlalchemy import delete, select

from handlers.clock import FrozenClock
from handlers.newsletter_draft import SECTIONS, Draft, compile_draft, render
from messages import Renderer
from storage import editions
from storage.db import Database
from storage.edition_demo import ITEMS, load_demo_edition
from storage.models import (
    Member,
    NapStatus,
    NationalUpdate,
    Person,
    Role,
    RoleName,
    Spotlight,
    UpdateAttachment,
    UpdateStatus,
    Visibility,
)
from tests.statements import counting

GOLDEN = Path(__file__).parent / "golden" / "newsletter"
HEADINGS = ("From the Network", "Focal point spotlight", "Member action and policy",
            "Innovation in policy and practice", "Best practices and lessons learned",
            "National action plan progress", "Knowledge products",
            "Funding and capacity-building opportunities", "Civil society voices",
            "Upcoming events")
PUBLIC = [i for i in ITEMS if i.status == UpdateStatus.APPROVED and i.visibility != "network"]
NEVER = [i for i in ITEMS if i not in PUBLIC]
CHATHAM_MEMBER, CHATHAM_AUTHOR = "Canada", "Amina Diallo"
CHATHAM_REGION = "Western European and other States"
HOSTILE = {
    "title": '<script>alert(1)</script> "><img src=x onerror=alert(2)>',
    "body": "{{ 7*7 }} {% if true %}x{% endif %}\n*bold* _it_ `code` [click](javascript:alert(3))"
            "\n# not a heading\n1. not a list\n<b>bold</b> &amp; | pipe | ~strike~",
}


@pytest.fixture
async def edition_db(demo_db: Database, clock: FrozenClock) -> Database:
    """The demo store with newsletter edition 1 and its demo updates."""
    async with demo_db.transaction() as session:
        assert await load_demo_edition(session, clock.now()) is not None
    return demo_db


async def compiled(db: Database, clock: FrozenClock, number: int = 1) -> Draft:
    async with db.transaction() as session:
        edition = await editions.by_number(session, number)
        assert edition is not None
        return await compile_draft(session, edition, Renderer(), now=clock.now(), by=None)


async def all_formats(db: Database, clock: FrozenClock) -> dict[str, str]:
    """The draft in every format, as text a person reads (docx dumped paragraph by paragraph)."""
    draft = await compiled(db, clock)
    return {"html": render(draft, "html").decode(), "md": render(draft, "md").decode(),
            "docx": docx_text(render(draft, "docx"))}


def docx_text(content: bytes) -> str:
    """Every paragraph with its style, and every table row, in document order."""
    doc = Document(io.BytesIO(content))
    props = doc.core_properties
    lines = [f"[properties] author: {props.author} · title: {props.title} · "
             f"created: {props.created} · revision: {props.revision}"]
    for block in doc.iter_inner_content():
        if isinstance(block, Table):
            lines += ["| " + " | ".join(c.text for c in row.cells) + " |" for row in block.rows]
        else:
            lines.append(f"[{block.style.name if block.style else ''}] {block.text}")
    return "\n".join(lines) + "\n"


def visible_text(html: str) -> str:
    doc = html5lib.parse(html, namespaceHTMLElements=False)
    return " ".join(" ".join(doc.find("body").itertext()).split())


def without_network_totals(text: str) -> str:
    """The output less the Network's NAP totals by region (which name every region)."""
    start = text.index("National action plans across the Network")
    end = text.index("As recorded by focal points: ", start)
    return text[:start] + text[end:]


def golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1"
    assert actual == path.read_text(encoding="utf-8")


async def test_the_demo_edition_matches_its_golden_files(edition_db: Database,
                                                         clock: FrozenClock) -> None:
    out = await all_formats(edition_db, clock)
    golden("edition-1.html", out["html"])
    golden("edition-1.md", out["md"])
    golden("edition-1.docx.txt", out["docx"])


def test_a_draft_is_built_without_the_collector_which_is_then_as_it_was() -> None:
    assert gc.isenabled()
    with editions.building():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), editions.building():
        raise RuntimeError("a failure half-way")
    assert gc.isenabled()
    gc.disable()
    try:
        with editions.building():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()


async def test_compiling_leaves_the_collector_on(edition_db: Database,
                                                 clock: FrozenClock) -> None:
    draft = await compiled(edition_db, clock)
    assert len(draft.items) == 8 and gc.isenabled()


async def test_every_public_item_is_in_its_section_and_nothing_else_is(
        edition_db: Database, clock: FrozenClock) -> None:
    draft = await compiled(edition_db, clock)
    titles = {s.key: [i.title for i in s.items] for s in draft.sections}
    for item in PUBLIC:
        assert item.title in titles[item.section], item.title
    assert len(draft.items) == len(PUBLIC) == 8
    out = await all_formats(edition_db, clock)
    for fmt, text in out.items():
        readable = visible_text(text) if fmt == "html" else text.replace("\\", "")
        for item in PUBLIC:
            assert item.title in readable, (fmt, item.title)
        for item in NEVER:  # network-only, still in review, withdrawn
            assert item.title not in readable, (fmt, item.title)
            assert item.body[:40] not in readable, (fmt, item.title)


async def test_an_item_with_several_attachments_is_one_item_listing_them_in_order(
        edition_db: Database, clock: FrozenClock) -> None:
    """The items and their attachments are read in one statement, a row per attachment."""
    async with edition_db.transaction() as session:
        first, second = PUBLIC[0], PUBLIC[1]
        ids = {i.title: await session.scalar(select(NationalUpdate.id).where(
            NationalUpdate.title == i.title)) for i in (first, second)}
        for name in ("plan-2018.pdf", "annex-a.docx", "annex-b.xlsx"):
            session.add(UpdateAttachment(update_id=ids[first.title], platform="telegram",
                                         file_id=f"f-{name}", name=name, size=1000,
                                         mime_type="application/octet-stream"))
    draft = await compiled(edition_db, clock)
    by_title = {i.title: i for i in draft.items}
    assert len(draft.items) == len(PUBLIC) == len(by_title)
    assert by_title[first.title].files == ["plan-2018.pdf", "annex-a.docx", "annex-b.xlsx"]
    assert by_title[second.title].files == []
    md = render(draft, "md").decode()
    assert md.index("plan-2018.pdf") < md.index("annex-a.docx") < md.index("annex-b.xlsx")
    assert md.count("annex-a.docx") == 1


async def test_the_draft_has_a_spotlight_the_nap_table_and_a_chart_of_table_cells(
        edition_db: Database, clock: FrozenClock) -> None:
    draft = await compiled(edition_db, clock)
    assert draft.spotlight is not None and draft.spotlight["member"] == "Chile"
    assert "Catalina Rojas (demo), Head of Human Rights Division" in \
        visible_text(render(draft, "html").decode())
    changes = {c["member"]: c["stage"] for c in draft.nap["changes"]}
    assert changes["Brazil"] == "NAP in development" and changes["Spain"] == "2nd NAP (adopted 2017)"
    html = render(draft, "html").decode()
    weog = next(r for r in draft.nap["totals"] if r["region"] == CHATHAM_REGION)
    assert (weog["adopted"], weog["members"]) == (6, 23)
    assert f'width="{weog["pct"]}%"' in html and 'bgcolor="#0b6fa4"' in html
    assert "<img" not in html and "<script" not in html and "http" not in html.split("<body")[0]


async def test_the_spotlight_nobody_chose_is_the_draft_it_makes_once_chosen(
        edition_db: Database, clock: FrozenClock) -> None:
    # The default spotlight's member is read by id, a chosen one through the edition: the
    # same section, so the same draft (its fingerprint covers everything the draft shows).
    async with edition_db.transaction() as session:
        await session.execute(delete(Spotlight))
        edition = await editions.by_number(session, 1)
        assert edition is not None
        member = await editions.default_spotlight(
            session, await editions.members_with_material(session, edition.id))
        alternate = await session.scalar(select(Person.id).where(
            Person.email == "fp.chile@demo.invalid"))
        assert member is not None and alternate is not None
        session.add(Role(person_id=alternate, member_id=member.id, role=RoleName.ALTERNATE))
    default = await compiled(edition_db, clock)
    assert default.spotlight is not None and default.spotlight["member"] == member.name
    assert default.spotlight["nap"] and default.spotlight["people"] and \
        default.spotlight["material"]
    async with edition_db.transaction() as session:
        await editions.choose_spotlight(session, edition.id, member.id, now=clock.now(), by=None)
    chosen = await compiled(edition_db, clock)
    assert chosen.spotlight == default.spotlight
    assert (default.number, chosen.number, chosen.is_new) == (1, 1, False)


async def test_a_spotlight_member_without_focal_points_or_a_nap_shows_neither(
        edition_db: Database, clock: FrozenClock) -> None:
    async with edition_db.transaction() as session:
        member = await session.scalar(
            select(Member).where(Member.id.not_in(select(NapStatus.member_id)),
                                 Member.id.not_in(select(Role.member_id)
                                                  .where(Role.member_id.is_not(None))))
            .order_by(Member.name).limit(1))
        edition = await editions.by_number(session, 1)
        assert member is not None and edition is not None
        await editions.choose_spotlight(session, edition.id, member.id, now=clock.now(), by=None)
    draft = await compiled(edition_db, clock)
    assert draft.spotlight == {"member": member.name, "region": member.region, "nap": "",
                               "people": [], "material": []}


async def test_a_recompile_reads_the_store_in_five_statements_and_words_the_same_draft(
        edition_db: Database, clock: FrozenClock) -> None:
    # The items, the spotlight with its NAP and people, the NAP changes with the totals, the
    # meetings, the last draft (and the first time, the new draft's INSERT). The second compile
    # takes its NAP stages, voices' sources and meetings' sentences as the renderer worded them.
    renderer = Renderer()
    counts, files = [], []
    for _ in range(2):
        async with edition_db.transaction() as session:
            edition = await editions.by_number(session, 1)
            assert edition is not None
            with counting(edition_db) as statements:
                draft = await compile_draft(session, edition, renderer, now=clock.now(), by=None)
            counts.append(len(statements))
        files.append({fmt: render(draft, fmt) for fmt in ("html", "md")})
    assert counts == [6, 5], counts
    assert files[0] == files[1]
    golden("edition-1.md", files[1]["md"].decode())


async def test_items_are_grouped_by_member_and_chatham_house_items_come_last(
        edition_db: Database, clock: FrozenClock) -> None:
    async with edition_db.transaction() as session:
        author = await session.scalar(select(Person).where(Person.email == "fp.chile@demo.invalid"))
        members = {m.code: m for m in await session.scalars(select(Member))}
        assert author is not None
        edition = await editions.by_number(session, 1)
        assert edition is not None
        for code, title, visibility in (("uruguay", "Uruguay opens a gender desk", "public"),
                                        ("argentina", "A first chatham item", "chatham"),
                                        ("austria", "Austria trains mediators", "public")):
            session.add(NationalUpdate(
                member_id=members[code].id, author_id=author.id, category="policy",
                title=title, body="Text.", links=[], visibility=visibility,
                status=UpdateStatus.APPROVED, section="member_action", edition_id=edition.id,
                created_at=clock.now(), submitted_at=clock.now()))
    draft = await compiled(edition_db, clock)
    section = next(s for s in draft.sections if s.key == "member_action")
    assert [(i.source, i.title[:22]) for i in section.items] == [
        ("Austria", "Austria trains mediato"), ("Uruguay", "Uruguay opens a gender"),
        ("", "A first chatham item"), ("", "Armed forces directive")]


async def test_the_chatham_house_item_carries_no_attribution_in_any_format(
        edition_db: Database, clock: FrozenClock) -> None:
    out = await all_formats(edition_db, clock)
    chatham = next(i for i in ITEMS if i.visibility == Visibility.CHATHAM)
    for fmt, text in out.items():
        assert chatham.title in (visible_text(text) if fmt == "html" else text), fmt
        assert CHATHAM_MEMBER not in text, fmt
        assert CHATHAM_AUTHOR not in text, fmt
        assert CHATHAM_REGION not in without_network_totals(text), fmt


async def hostile_item(db: Database, clock: FrozenClock, *, organisation: str = "") -> int:
    async with db.transaction() as session:
        author = await session.scalar(select(Person).where(Person.email == "fp.chile@demo.invalid"))
        chile = await session.scalar(select(Member).where(Member.code == "chile"))
        edition = await editions.by_number(session, 1)
        assert author is not None and chile is not None and edition is not None
        row = NationalUpdate(
            member_id=None if organisation else chile.id, organisation=organisation,
            author_id=author.id, category="civil_society" if organisation else "policy",
            title=HOSTILE["title"], body=HOSTILE["body"],
            links=["https://example.org/a?b=1&c=<2>", "javascript:alert(4)"],
            visibility="public", status=UpdateStatus.APPROVED,
            section="civil_society" if organisation else "innovation", edition_id=edition.id,
            created_at=clock.now(), submitted_at=clock.now())
        session.add(row)
        await session.flush()
        return row.id


async def test_hostile_input_is_shown_as_written_and_injects_nothing(
        edition_db: Database, clock: FrozenClock) -> None:
    await hostile_item(edition_db, clock)
    await hostile_item(edition_db, clock, organisation='<b>"Org"</b> *star* & co')
    out = await all_formats(edition_db, clock)

    tree = html5lib.parse(out["html"], namespaceHTMLElements=False)
    assert tree.findall(".//script") == [] and tree.findall(".//img") == []
    hrefs = [a.get("href") for a in tree.iter("a")]
    assert not any(h.lower().startswith("javascript") for h in hrefs if h)
    text = visible_text(out["html"])
    assert '<script>alert(1)</script> "><img src=x onerror=alert(2)>' in text
    assert "{{ 7*7 }}" in text and "49" not in text and "{% if true %}x{% endif %}" in text
    assert '<b>"Org"</b> *star* & co · civil society' in text
    assert "https://example.org/a?b=1&c=<2>" in text

    md_html = MarkdownIt("commonmark").enable("table").enable("strikethrough").render(out["md"])
    md_tree = html5lib.parse(md_html, namespaceHTMLElements=False)
    for tag in ("script", "img", "b", "code", "ol", "s", "del"):
        assert [e for e in md_tree.iter() if e.tag == tag] == [], tag
    assert [e.text for e in md_tree.iter("h1")] == [
        "Newsletter: National action plans, and the road to Berlin"]
    marked = {"".join(e.itertext()) for e in md_tree.iter() if e.tag in ("em", "strong")}
    assert not marked & {"bold", "it", "star", "Org"}, marked
    assert not any((a.get("href") or "").startswith("javascript") for a in md_tree.iter("a"))
    md_text = " ".join(" ".join(md_tree.find("body").itertext()).split())
    assert '<script>alert(1)</script> "><img src=x onerror=alert(2)>' in md_text
    assert "*bold* _it_ `code` [click](javascript:alert(3))" in md_text
    assert "# not a heading" in md_text and "1. not a list" in md_text
    assert "<b>bold</b> &amp; | pipe | ~strike~" in md_text
    assert "{{ 7*7 }}" in md_text

    assert HOSTILE["title"] in out["docx"] and "{{ 7*7 }}" in out["docx"]
    assert "javascript:alert(4)" not in out["docx"] + out["md"] + out["html"]


async def test_the_html_is_valid_html5(edition_db: Database, clock: FrozenClock) -> None:
    await hostile_item(edition_db, clock)
    html = (await all_formats(edition_db, clock))["html"]
    parser = html5lib.HTMLParser(strict=True)
    parser.parse(html)  # strict: the first parse error raises
    assert parser.errors == []
    assert html.startswith("<!DOCTYPE html>") and "<style" not in html
    assert 'style="' in html and 'class="section-heading"' in html  # the CSS is inlined


def _elements(html: str) -> list[tuple[str, dict[str, str], str]]:
    """Every element of a parsed document in order: its tag, attributes and own text."""
    tree = html5lib.parse(html, namespaceHTMLElements=False)
    return [(e.tag, {k: _declarations(v) if k == "style" else v for k, v in e.attrib.items()},
             (e.text or "").strip()) for e in tree.iter()]


def _declarations(style: str) -> str:
    """A style attribute's declarations, one "; " between each (css-inline ends a style it
    wrote itself with ";", and one it merged into without)."""
    return "; ".join(d.strip() for d in style.split(";") if d.strip())


async def test_every_element_carries_what_css_inline_would_inline(
        edition_db: Database, clock: FrozenClock) -> None:
    """The styles are worked out per class, once; inlining the stylesheet into a rendered draft
    again with css-inline must add nothing (a rule that selects anything but one class or
    `body` would, and fail here)."""
    import css_inline

    from messages.newsletter import stylesheet

    await hostile_item(edition_db, clock)
    html = (await all_formats(edition_db, clock))["html"]
    again = css_inline.CSSInliner(extra_css=stylesheet(), keep_style_tags=False,
                                  load_remote_stylesheets=False).inline(html)
    mine, theirs = _elements(html), _elements(again)
    assert len(mine) > 250 and mine == theirs
    styled = [attrs for _, attrs, _ in mine if "class" in attrs]
    assert styled and all(attrs.get("style") for attrs in styled)
    body = next(attrs for tag, attrs, _ in mine if tag == "body")
    assert body["style"] == "margin: 0; padding: 0; background-color: #eef1f5"


async def test_the_docx_has_real_headings_and_lists(edition_db: Database,
                                                    clock: FrozenClock) -> None:
    draft = await compiled(edition_db, clock)
    doc = Document(io.BytesIO(render(draft, "docx")))
    by_style: dict[str, list[str]] = {}
    for p in doc.paragraphs:
        by_style.setdefault(p.style.name if p.style else "", []).append(p.text)
    assert by_style["Heading 1"] == ["In this edition", *HEADINGS]
    assert by_style["Title"] == ["Newsletter: National action plans, and the road to Berlin"]
    for item in PUBLIC:
        assert item.title in by_style["Heading 2"]
    assert "Catalina Rojas (demo), Head of Human Rights Division, Ministry of Foreign Affairs " \
           "of Chile" in by_style["List Bullet"]
    assert len(doc.tables) == 2 and doc.tables[1].rows[0].cells[0].text == "Region"


def test_sections_run_in_the_newsletter_order() -> None:
    renderer = Renderer()
    assert [renderer.render(f"newsletter.heading_{k}") for k in SECTIONS] == list(HEADINGS)


async def test_recompiling_is_idempotent_and_a_change_makes_the_next_draft(
        edition_db: Database, clock: FrozenClock) -> None:
    first = await compiled(edition_db, clock)
    again = await compiled(edition_db, clock)
    assert (first.number, first.is_new, again.number, again.is_new) == (1, True, 1, False)
    async with edition_db.transaction() as session:
        record = await editions.latest_draft(session, first.edition.id)
        assert record is not None
        assert sorted(tuple(v) for v in record.items) == sorted(
            (i.update_id, i.version) for i in first.items)
        row = await session.scalar(select(NationalUpdate).where(
            NationalUpdate.title.startswith("A toolkit")))
        assert row is not None
        row.body, row.version = "The toolkit was launched in December 2017.", row.version + 1
        toolkit = row.id
    later = await compiled(edition_db, clock)
    assert (later.number, later.is_new) == (2, True)
    assert [toolkit, 2] in [[i.update_id, i.version] for i in later.items]
    assert "launched in December 2017" in render(later, "md").decode()


async def test_has_submitted_counts_items_in_the_edition_and_pending_ones(
        edition_db: Database) -> None:
    async with edition_db.transaction() as session:
        edition = await editions.by_number(session, 1)
        members = {m.code: m.id for m in await session.scalars(select(Member))}
        assert edition is not None
        assert await editions.has_submitted(session, edition.id, members["chile"])
        assert await editions.has_submitted(session, edition.id, members["namibia"])  # pending
        assert not await editions.has_submitted(session, edition.id, members["germany"])  # withdrawn
        assert not await editions.has_submitted(session, edition.id, members["japan"])


async def test_the_default_spotlight_rotates_across_regions(edition_db: Database,
                                                            clock: FrozenClock) -> None:
    async with edition_db.transaction() as session:
        members = {m.code: m for m in await session.scalars(select(Member))}
        candidates = [members[c] for c in ("brazil", "chile", "slovenia", "united-states")]
        assert (await editions.default_spotlight(session, candidates)).code == "brazil"  # type: ignore[union-attr]
        edition = await editions.by_number(session, 1)
        assert edition is not None
        spot = await editions.choose_spotlight(session, edition.id, members["brazil"].id,
                                               now=clock.now(), by=None)
        spot.featured_at = clock.now()
        await session.flush()
        # Brazil's region (Latin America and the Caribbean) was featured: Chile must wait.
        chosen = await editions.default_spotlight(session, candidates)
        assert chosen is not None and chosen.code == "slovenia"


async def test_the_draft_finds_an_editions_items_and_their_files_by_index(
        edition_db: Database) -> None:
    """SQLite's plan for the draft's one statement: the edition's updates and each one's
    attachments are looked up by index, no table is scanned whole (before migration 0012
    `update_attachment` was scanned once per update)."""
    if not edition_db.is_sqlite:
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's")
    async with edition_db.transaction() as session:
        connection = await session.connection()
        statement = editions._DRAFT_ROWS.params(edition_id=1).compile(
            connection.engine, compile_kwargs={"literal_binds": True})
        plan = [row[-1] for row in (await connection.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {statement}")).all()]
    assert any("ix_update_edition" in step for step in plan), plan
    assert any("ix_attachment_update" in step for step in plan), plan
    assert not [step for step in plan if step.startswith("SCAN")
                and "USING" not in step], plan
