"""The newsletter compile: an edition of 200, 2,000 and 20,000 approved updates across 78 and
1,000 members, compiled to HTML, Markdown and Word by the product's own functions.

The store is the demo with newsletter edition 1 (its 8 public demo updates, its NAP figures,
Chile in the spotlight), grown by bulk inserts to 1,000 members and to each size: updates
spread over the members and the sections, one in ten under the Chatham House Rule, one in
twenty a civil society voice, each with two paragraphs, a link and Markdown and HTML
characters to escape. The project is what `/newsletter N html|md|docx` does: one
transaction, `compile_draft` (the store read, the draft recorded), then `render`.

Baseline, in the same rounds (the templating floor): rendering the same items, prepared as a
list beforehand (the draft's context), with the same Jinja templates (`DraftTemplates`: the
HTML one with its styles written in when it was compiled, Markdown); for Word, which has no
template, python-docx writing each item's heading, attribution and paragraphs. Targets: at
most 3× the floor, and linear in the number of updates (the time per update at the largest
size at most 1.5× that at the size before it). Peak memory: the rise of the resident set
(VmHWM after the step, reset before it, so C allocations such as python-docx's lxml count
too), in an untimed pass.

The process is settled before the timed rounds as `fpbot serve` and `fpbot run` settle
theirs once started (`bot.runner.settle_memory`: what is alive is collected once and frozen),
so a full collection does not walk the benchmark's own objects in the middle of a step.

On SQLite, a file per member count in `opts.workdir`.
"""

from __future__ import annotations

import ctypes
import gc
import io
import re
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from docx import Document
from sqlalchemy import func, insert, select

from benchmarks._fanout_seed import DEMO_MEMBERS, add_members, demo_store
from benchmarks.common import Figure, Options
from bot.runner import settle_memory
from handlers.newsletter_draft import Draft, compile_draft, render
from messages import Renderer
from messages.newsletter import DraftTemplates
from storage import editions
from storage.db import Database
from storage.edition_demo import load_demo_edition
from storage.models import Edition, Member, NationalUpdate, Person, Role, RoleName, UpdateStatus

BENCHMARK = "compile"
SIZES, QUICK_SIZES = (200, 2_000, 20_000), (200, 2_000)
MEMBERS = (DEMO_MEMBERS, 1_000)
FORMATS = ("html", "md", "docx")
FORMAT_NAMES = {"html": "HTML", "md": "Markdown", "docx": "Word"}
TARGET_RATIO = 3.0
LINEAR_RATIO = 1.5
REPEAT_ITEMS = 2_000  # a timing runs a step at least this many items' worth of times
SECTIONS = ("proceedings", "member_action", "innovation", "lessons", "knowledge", "funding",
            "events")  # where the bench updates go (civil society voices: their own section)
CATEGORIES = ("policy", "best_practice", "nap_progress", "knowledge_product", "funding",
              "event")
BODY = ("Update {n}: the *national* action plan's _second_ phase [2025-2030] was adopted "
        "by the cabinet & funded <in full>, with 40 % of its budget for women's "
        "participation in peace processes.\nA line of its own, kept in the paragraph.\n\n"
        "Second paragraph: the ministry trained {n} mediators; # not a heading, 1. not a "
        "list, `not code`, | not a table |, and ~not struck~.")


# -- the store --------------------------------------------------------------------------------

async def edition_store(url: str, members: int, now: datetime) -> tuple[Database, int]:
    """The demo store with edition 1 and `members` members; returns it and the edition id."""
    db = await demo_store(url, now)
    try:
        async with db.transaction() as session:
            edition = await load_demo_edition(session, now)
            if edition is None:
                raise RuntimeError("the demo edition did not load")
            edition_id = edition.id
        await add_members(db, members - DEMO_MEMBERS, now, submitted_every=0)
    except BaseException:
        await db.dispose()
        raise
    return db, edition_id


async def public_items(db: Database, edition_id: int) -> int:
    async with db.transaction() as session:
        return len(await editions.items(session, edition_id, public=True))


async def grow(db: Database, edition_id: int, size: int, now: datetime) -> None:
    """Approved updates in the edition until it holds `size` public items."""
    have = await public_items(db, edition_id)
    async with db.transaction() as session:
        members = list(await session.scalars(select(Member.id).order_by(Member.id)))
        coordinator = await session.scalar(
            select(Person.id).join(Role, Role.person_id == Person.id)
            .where(Role.role == RoleName.SECRETARIAT).order_by(Person.id).limit(1))
        start = int(await session.scalar(select(func.count()).select_from(NationalUpdate))
                    or 0)
        rows = []
        for k in range(size - have):
            n = start + k
            voice = n % 20 == 0
            rows.append({
                "member_id": None if voice else members[n % len(members)],
                "organisation": f"Women's Network {n % 37}" if voice else "",
                "author_id": coordinator, "category": "civil_society" if voice
                else CATEGORIES[n % len(CATEGORIES)],
                "title": f"Bench update {n}: <progress> & \"results\"",
                "body": BODY.format(n=n), "links": [f"https://example.org/updates/{n}"],
                "visibility": "chatham" if n % 10 == 3 else "public",
                "status": UpdateStatus.APPROVED,
                "section": "civil_society" if voice else SECTIONS[n % len(SECTIONS)],
                "review_note": "", "version": 1, "created_at": now - timedelta(days=3),
                "submitted_at": now - timedelta(days=2, seconds=n),
                "decided_at": now - timedelta(days=1), "decided_by": coordinator,
                "edition_id": edition_id})
        if rows:
            await session.execute(insert(NationalUpdate), rows)


# -- the steps measured -------------------------------------------------------------------------

async def compiled(db: Database, edition_id: int, renderer: Renderer, now: datetime
                   ) -> Draft:
    async with db.transaction() as session:
        edition = await session.get(Edition, edition_id)
        assert edition is not None
        return await compile_draft(session, edition, renderer, now=now, by=None)


def project_step(db: Database, edition_id: int, renderer: Renderer, now: datetime,
                 fmt: str) -> Callable[[], Awaitable[bytes]]:
    """`/newsletter N fmt`: compile the edition from the store, render one format."""
    async def step() -> bytes:
        async with db.transaction() as session:
            edition = await session.get(Edition, edition_id)
            assert edition is not None
            draft = await compile_draft(session, edition, renderer, now=now, by=None)
        return render(draft, fmt)
    return step


def floor_step(draft: Draft, fmt: str) -> Callable[[], Awaitable[bytes]]:
    """The same items from a list prepared beforehand, through the same templates."""
    templates = DraftTemplates()
    context = draft.context()

    async def step() -> bytes:
        if fmt == "html":
            return templates.html(draft.t, **context).encode("utf-8")
        if fmt == "md":
            return templates.markdown(draft.t, **context).encode("utf-8")
        return docx_floor(context)
    return step


def docx_floor(context: dict[str, Any]) -> bytes:
    """python-docx writing each item's heading, attribution and paragraphs, nothing more, each
    in front of a closing paragraph (`Document.add_paragraph` looks through the whole body
    for each one: quadratic, no floor)."""
    doc = Document()
    add = doc.add_paragraph().insert_paragraph_before
    add(str(context["title"]), "Title")
    for section in context["sections"]:
        add(section["heading"], "Heading 1")
        for item in section["entries"]:
            add(item["title"], "Heading 2")
            add(item["source"])
            for para in item["paragraphs"]:
                add("\n".join(para))
            for link in item["links"]:
                add(link, "List Bullet")
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def check(draft: Draft, size: int, outputs: dict[str, bytes]) -> str:
    """Why the draft is not the edition the store holds ("" when it is)."""
    if len(draft.items) != size:
        return f"the draft holds {len(draft.items)} items, not {size}"
    titles = [i.title for i in draft.items if i.title.startswith("Bench update")]
    if not titles:
        return "no bench update in the draft"
    sample = [titles[0], titles[len(titles) // 2], titles[-1]]
    html = outputs["html"].decode("utf-8")
    md = outputs["md"].decode("utf-8")
    for title in sample:
        number = re.search(r"\d+", title)
        assert number is not None
        shown = f"Bench update {number.group()}:"
        if shown not in html or shown not in md:
            return f"{title!r} is missing from the HTML or the Markdown"
    doc = Document(io.BytesIO(outputs["docx"]))
    headings = sum(1 for p in doc.paragraphs if p.style is not None
                   and p.style.name == "Heading 2" and p.text.startswith("Bench update"))
    if headings != len(titles):
        return f"the Word draft has {headings} bench update headings, not {len(titles)}"
    return ""


async def seconds(step: Callable[[], Awaitable[bytes]], repeat: int = 1) -> float:
    """The time one run of `step` takes: the mean of `repeat` runs in a row."""
    began = time.perf_counter()
    for _ in range(repeat):
        await step()
    return (time.perf_counter() - began) / repeat


def repeats(size: int) -> int:
    """Runs per timing at a size: a 200-item step takes a few milliseconds, where the
    machine's jitter alone moved a median of 3 by half."""
    return max(1, REPEAT_ITEMS // size)


def _vm(field_name: str) -> int:
    """A VmHWM / VmRSS line of /proc/self/status, in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field_name} in /proc/self/status")


def _trim() -> None:
    """Collect garbage and give freed memory back to the system, so a step's rise shows."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


async def peak_rise(step: Callable[[], Awaitable[bytes]]) -> float:
    """How far the resident set rose above where it stood while `step` ran, in MiB."""
    _trim()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")  # VmHWM := VmRSS
    before = _vm("VmRSS")
    await step()
    return max(_vm("VmHWM") - before, 0) / 2**20


# -- rounds and figures ---------------------------------------------------------------------

@dataclass
class Cell:
    """One member count, size and format: its rounds."""

    members: int
    size: int
    fmt: str
    project: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    project_mib: float | None = None
    floor_mib: float | None = None
    problem: str = ""

    def ms(self, which: list[float]) -> float | None:
        return statistics.median(which) * 1000 if which and not self.problem else None


async def measure(url: str, members: int, sizes: tuple[int, ...], rounds: int,
                  now: datetime) -> list[Cell]:
    db, edition_id = await edition_store(url, members, now)
    renderer = Renderer()
    cells: list[Cell] = []
    try:
        for size in sizes:
            await grow(db, edition_id, size, now)
            draft = await compiled(db, edition_id, renderer, now)  # warm-up, and the floor's list
            steps = {fmt: (project_step(db, edition_id, renderer, now, fmt),
                           floor_step(draft, fmt)) for fmt in FORMATS}
            outputs = {fmt: await steps[fmt][0]() for fmt in FORMATS}
            problem = check(draft, size, outputs)
            row = {fmt: Cell(members, size, fmt, problem=problem) for fmt in FORMATS}
            cells += row.values()
            if problem:
                continue
            settle_memory()  # as `fpbot serve` and `fpbot run` do once started
            times = repeats(size)
            for r in range(rounds):
                for fmt in FORMATS:
                    mine, floor = steps[fmt]
                    if r % 2 == 0:
                        row[fmt].project.append(await seconds(mine, times))
                        row[fmt].floor.append(await seconds(floor, times))
                    else:
                        row[fmt].floor.append(await seconds(floor, times))
                        row[fmt].project.append(await seconds(mine, times))
            gc.unfreeze()
            for fmt in FORMATS:
                mine, floor = steps[fmt]
                row[fmt].project_mib = await peak_rise(mine)
                row[fmt].floor_mib = await peak_rise(floor)
            del draft, steps, outputs
    finally:
        await db.dispose()
    return cells


def _repeated(size: int) -> str:
    times = repeats(size)
    return f" (each the mean of {times} runs in a row)" if times > 1 else ""


def figures(cells: list[Cell]) -> list[Figure]:
    out: list[Figure] = []
    for c in cells:
        where = f"{c.size:,} updates, {c.members:,} members"
        name = FORMAT_NAMES[c.fmt]
        ms, floor_ms = c.ms(c.project), c.ms(c.floor)
        ratio = ms / floor_ms if ms is not None and floor_ms else None
        per = (f"; {ms * 1000 / c.size:.0f} µs per update (floor {floor_ms * 1000 / c.size:.0f})"
               if ms is not None and floor_ms is not None else "")
        failed = f"; FAILED: {c.problem}" if c.problem else ""
        out.append(Figure(
            BENCHMARK, f"{name} draft, {where}: time", ms, floor_ms, "ms",
            f"≤ {TARGET_RATIO:.0f}× the templating floor",
            False if c.problem else None if ratio is None else ratio <= TARGET_RATIO,
            f"median of {len(c.project)}{_repeated(c.size)}; compile_draft (store read, draft "
            f"recorded) + render, one transaction{per}; floor: "
            + ("python-docx writing the same items (no template for Word)" if c.fmt == "docx"
               else "the same Jinja template on the prepared items")
            + failed))
        out.append(Figure(
            BENCHMARK, f"{name} draft, {where}: peak memory", c.project_mib, c.floor_mib,
            "MiB", "", None,
            "rise of the resident set (VmHWM) above its level before the step, one untimed "
            "pass; baseline: the floor's step" + failed))
    for members in sorted({c.members for c in cells}):
        for fmt in FORMATS:
            mine = sorted((c for c in cells if c.members == members and c.fmt == fmt),
                          key=lambda c: c.size)
            if len(mine) < 2:
                continue
            big, ref = mine[-1], mine[-2]
            big_ms, ref_ms = big.ms(big.project), ref.ms(ref.project)
            big_per = None if big_ms is None else big_ms * 1000 / big.size
            ref_per = None if ref_ms is None else ref_ms * 1000 / ref.size
            out.append(Figure(
                BENCHMARK, f"{FORMAT_NAMES[fmt]} draft, {members:,} members: time per update at "
                f"{big.size:,} updates", big_per, ref_per, "µs",
                f"≤ {LINEAR_RATIO}× the time per update at {ref.size:,} (linear)",
                False if big.problem or ref.problem else None if big_per is None
                or ref_per is None else big_per <= LINEAR_RATIO * ref_per,
                "per update at each size: " + ", ".join(
                    f"{c.size:,}: {ms * 1000 / c.size:.0f} µs"
                    for c in mine if (ms := c.ms(c.project)) is not None)
                + f"; baseline: the time per update at {ref.size:,}"
                + "".join(f"; FAILED at {c.size:,}: {c.problem}" for c in (ref, big)
                          if c.problem)))
    return out


async def run(opts: Options) -> list[Figure]:
    sizes = QUICK_SIZES if opts.quick else SIZES
    rounds = max(opts.rounds, 1)
    now = datetime.now(UTC).replace(microsecond=0)
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="compile-", dir=opts.workdir) as tmp:
        for members in MEMBERS:
            url = f"sqlite+aiosqlite:///{Path(tmp) / f'compile-{members}.db'}"
            cells += await measure(url, members, sizes, rounds, now)
    return figures(cells)
