"""A newsletter draft as a Word document (python-docx): real headings, lists and tables.

Its own module so that python-docx and lxml are loaded only when a Word file is asked for.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any

from docx import Document
from docx.shared import Pt, RGBColor

if TYPE_CHECKING:
    from handlers.newsletter_draft import Draft


class _Body:
    """The document's body, written in order in front of its closing paragraph.

    python-docx's `Document.add_paragraph` finds where to put a paragraph by looking through
    everything written so far (the section properties come last), so a draft took time in
    the square of its length: 20,000 updates, minutes. `insert_paragraph_before` a paragraph
    already there takes the same time at any length."""

    def __init__(self, doc: Any, closing: str, style: str) -> None:
        self._doc = doc
        self._end = doc.add_paragraph(closing, style=style)

    def add_paragraph(self, text: str = "", style: str | None = None) -> Any:
        return self._end.insert_paragraph_before(text, style)

    def add_heading(self, text: str, level: int) -> Any:
        return self.add_paragraph(text, "Title" if level == 0 else f"Heading {level}")

    def add_table(self, rows: int, cols: int) -> Any:
        table = self._doc.add_table(rows=rows, cols=cols)  # at the end (a few a document),
        self._end._p.addprevious(table._tbl)  # then moved in front of the closing paragraph
        return table


def as_docx(draft: Draft) -> bytes:
    """A Word document with real headings, lists and tables, for the secretariat to edit."""
    t, ctx = draft.t, draft.context()
    document = Document()
    doc = _Body(document, t("footer"), "Caption")
    normal = document.styles["Normal"]
    normal.font.name = "Calibri"
    normal.font.size = Pt(11)
    props = document.core_properties  # python-docx's own defaults name python-docx and 2013
    props.title = f"{t('masthead')} · {ctx['title']}"
    props.language = ctx["lang"]
    props.author = props.last_modified_by = t("docx_author")
    props.subject = t("network_name")
    props.comments = t("draft_note", draft=ctx["draft"], created=ctx["created"],
                       count=ctx["count"])
    created = draft.created  # the clock's: a draft compiled again is the same file
    created = (created.astimezone(UTC) if created.tzinfo else created.replace(tzinfo=UTC))
    props.created = props.modified = created.replace(tzinfo=None)
    props.revision = max(1, draft.number)
    doc.add_paragraph(t("network_name"), style="Subtitle")
    doc.add_heading(f"{t('masthead')}: {ctx['title']}", level=0)
    doc.add_paragraph(t("edition_line", number=ctx["number"], start=ctx["start"],
                        end=ctx["end"]))
    note = doc.add_paragraph(style="Intense Quote")
    note.add_run(t("draft_note", draft=ctx["draft"], created=ctx["created"],
                   count=ctx["count"]))
    doc.add_heading(t("contents"), level=1)
    for s in ctx["sections"]:
        doc.add_paragraph(f"{s['heading']} ({s['count']})", style="List Bullet")
    for s in ctx["sections"]:
        doc.add_heading(s["heading"], level=1)
        if s["key"] == "spotlight":
            _docx_spotlight(doc, t, ctx)
        if s["key"] == "events":
            _docx_events(doc, t, ctx["events"])
        for item in s["entries"]:
            doc.add_heading(item["title"], level=2)
            lead = doc.add_paragraph()
            run = lead.add_run(t("chatham") if item["chatham"] else item["source"])
            run.bold, run.italic = not item["chatham"], item["chatham"]
            run.font.color.rgb = RGBColor(0x52, 0x60, 0x6D) if item["chatham"] else \
                RGBColor(0xB3, 0x5C, 0x00)
            for para in item["paragraphs"]:
                p = doc.add_paragraph()
                for n, line in enumerate(para):
                    r = p.add_run(line)
                    if n < len(para) - 1:
                        r.add_break()
            if item["links"]:
                doc.add_paragraph(t("links"), style="Heading 4")
                for link in item["links"]:
                    doc.add_paragraph(link, style="List Bullet")
            if item["files"]:
                doc.add_paragraph(t("files"), style="Heading 4")
                for name in item["files"]:
                    doc.add_paragraph(name, style="List Bullet")
        if s["key"] == "nap_progress":
            _docx_nap(doc, t, ctx["nap"])
        if not s["count"] and s["key"] not in ("spotlight", "nap_progress"):
            doc.add_paragraph().add_run(t("empty_section")).italic = True
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _docx_spotlight(doc: Any, t: Callable[..., str], ctx: dict[str, Any]) -> None:
    spot = ctx["spotlight"]
    if not spot:
        doc.add_paragraph().add_run(t("spotlight_none", number=ctx["number"])).italic = True
        return
    doc.add_heading(spot["member"], level=2)
    doc.add_paragraph(t("spotlight_intro", member=spot["member"], region=spot["region"]))
    if spot["nap"]:
        doc.add_paragraph(t("spotlight_nap", stage=spot["nap"]))
    if spot["people"]:
        doc.add_paragraph(t("spotlight_people"), style="Heading 4")
        for p in spot["people"]:
            doc.add_paragraph(t("spotlight_person", **p), style="List Bullet")
    if spot["material"]:
        doc.add_paragraph(t("spotlight_material", member=spot["member"]), style="Heading 4")
        for title in spot["material"]:
            doc.add_paragraph(title, style="List Bullet")
    doc.add_paragraph().add_run(t("spotlight_note")).italic = True


def _docx_events(doc: Any, t: Callable[..., str], events: list[dict[str, Any]]) -> None:
    for event in events:
        doc.add_heading(event["title"], level=2)
        run = doc.add_paragraph().add_run(event["lead"])
        run.bold, run.font.color.rgb = True, RGBColor(0xB3, 0x5C, 0x00)
        facts = [("event_when_label", event["when"]), ("event_where_label", event["venue"]),
                 ("event_online_label", event["online_url"]),
                 ("event_agenda_label", event["agenda_url"]),
                 ("event_registration_label", event["registration"]),
                 ("event_eligible_label", event["eligible"])]
        for label, value in facts:
            if value:
                p = doc.add_paragraph(style="List Bullet")
                p.add_run(f"{t(label)}: ").bold = True
                p.add_run(value)
        if event["chatham"]:
            doc.add_paragraph().add_run(t("event_chatham")).italic = True


def _docx_nap(doc: Any, t: Callable[..., str], nap: dict[str, Any]) -> None:
    doc.add_heading(t("nap_changes"), level=3)
    if nap["changes"]:
        table = doc.add_table(rows=1, cols=3)
        table.style = "Light List Accent 1"
        for cell, key in zip(table.rows[0].cells, ("nap_col_member", "nap_col_status",
                                                     "nap_col_date"), strict=True):
            cell.text = t(key)
        for c in nap["changes"]:
            cells = table.add_row().cells
            cells[0].text, cells[1].text, cells[2].text = c["member"], c["stage"], c["date"]
    else:
        doc.add_paragraph().add_run(t("nap_no_changes")).italic = True
    doc.add_heading(t("nap_totals"), level=3)
    table = doc.add_table(rows=1, cols=2)
    table.style = "Light List Accent 1"
    table.rows[0].cells[0].text = t("nap_col_region")
    table.rows[0].cells[1].text = t("nap_col_count")
    for r in nap["totals"]:
        cells = table.add_row().cells
        cells[0].text = r["region"]
        cells[1].text = t("nap_count", adopted=r["adopted"], members=r["members"])
    doc.add_paragraph(t("nap_total_line", adopted=nap["adopted"], members=nap["members"],
                        developing=nap["developing"]))
