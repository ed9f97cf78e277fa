"""Demo newsletter: edition 1, collecting, fed by the updates of the Chair's summary of 21 September 2017.

Approved public items in their sections, one under the Chatham House Rule (Canada's directive),
one network-only (Norway's document, "to be disseminated through the Network"), a civil society
voice, and the NAP statuses the summary reports. Two more updates must never show in a draft:
one still waiting for review, one withdrawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import editions
from storage.edition_deadlines import sync_edition_deadline
from storage.models import (
    Edition,
    Member,
    NapHistory,
    NapStage,
    NapStatus,
    NationalUpdate,
    Person,
    UpdateRevision,
    UpdateStatus,
)

COORDINATOR = "coordinator@demo.invalid"
SECRETARIAT_SOURCE = "Network secretariat (UN-Women)"


@dataclass(frozen=True)
class DemoItem:
    member: str  # member code; "" for an organisation's item
    author: str  # e-mail of a demo person
    category: str
    section: str
    title: str
    body: str
    visibility: str = "public"
    status: str = UpdateStatus.APPROVED
    links: tuple[str, ...] = ()
    organisation: str = ""
    days_ago: int = 10


ITEMS = (
    DemoItem("", COORDINATOR, "policy", "proceedings",
             "The Network met in New York on women's participation in peace and security",
             "On the margins of the general debate of the seventy-second session of the General "
             "Assembly, the second meeting of the Network was held in New York on 21 September "
             "2017, co-convened by Spain, together with Germany and Namibia, with the support of "
             "UN-Women.\n\nOver 100 people attended, including focal points and national "
             "representatives from all regions, the United Nations and international "
             "non-governmental organizations.",
             organisation=SECRETARIAT_SOURCE, days_ago=30),
    DemoItem("brazil", COORDINATOR, "nap_progress", "nap_progress",
             "Brazil launches the development of its first national action plan",
             "Brazil launched the development of its first national action plan on women and "
             "peace and security on 8 March 2017.", days_ago=20),
    DemoItem("chile", "fp.chile@demo.invalid", "nap_progress", "nap_progress",
             "Progress indicators in Chile's second national action plan",
             "For the first time, progress indicators are included in Chile's recently adopted "
             "second national action plan, so that its implementation can be measured year by "
             "year.", days_ago=18),
    DemoItem("canada", COORDINATOR, "policy", "member_action",
             "Armed forces directive integrates resolution 1325 into planning and operations",
             "The armed forces have established a directive to integrate Security Council "
             "resolution 1325 (2000) and subsequent resolutions into planning, doctrine and "
             "operations. The new national defence policy introduces a commitment to women and "
             "peace and security.", visibility="chatham", days_ago=16),
    DemoItem("norway", COORDINATOR, "knowledge_product", "knowledge",
             "Gender equality in peacekeeping training and peace processes",
             "Norway is developing a document on the inclusion of gender equality in "
             "peacekeeping training and peace processes, to be disseminated through the "
             "Network.", visibility="network", days_ago=15),
    DemoItem("united-states", COORDINATOR, "knowledge_product", "knowledge",
             "A toolkit to support the development of national action plans",
             "The United States is producing a toolkit to support the development of national "
             "action plans, to be launched later in 2017.", days_ago=14),
    DemoItem("slovenia", COORDINATOR, "event", "events",
             "Regional meeting on the national action plans of Western Balkan countries",
             "Slovenia is organizing a regional meeting on women and peace and security, "
             "dedicated to the national action plans of Western Balkan countries, in February "
             "2018.", days_ago=12),
    DemoItem("", COORDINATOR, "event", "events",
             "Annual meeting of the Network: Berlin, 9-10 April 2018",
             "Germany hosts the Network's capital-level meeting in 2018. Focal points are asked "
             "to facilitate the participation of non-governmental organizations and of "
             "grassroots-level women leaders.", organisation=SECRETARIAT_SOURCE, days_ago=8),
    DemoItem("", "wilpf@demo.invalid", "civil_society", "civil_society",
             "Funding for women's organisations on the frontline",
             "Women's civil society organizations working on the frontline of conflict "
             "prevention need innovative funding models. We ask focal points to bring their "
             "ministries' funding instruments to the Berlin meeting.",
             organisation="Women's International League for Peace and Freedom", days_ago=6),
    # Never in a draft: still in review, and withdrawn by its author.
    DemoItem("namibia", "fp.namibia@demo.invalid", "nap_progress", "",
             "Namibia embarks on its first national action plan",
             "The engagement of Namibia with the Network contributed to its decision to develop "
             "its first national action plan.", status=UpdateStatus.SUBMITTED, days_ago=3),
    DemoItem("germany", "fp.germany@demo.invalid", "nap_progress", "",
             "Germany's second national action plan (withdrawn draft)",
             "Germany launched its second national action plan in 2017.",
             status=UpdateStatus.WITHDRAWN, days_ago=9),
)

# NAP statuses as the Chair's summary of 21 September 2017 reports them (year only when said).
# Canada's is left out: its demo item is under the Chatham House Rule, and no part of the
# demo draft should name it.
NAPS = (
    ("brazil", NapStage.IN_DEVELOPMENT, None, None, False, False, 20),
    ("namibia", NapStage.IN_DEVELOPMENT, None, None, False, False, 19),
    ("chile", NapStage.ADOPTED, 2, None, False, True, 18),
    ("germany", NapStage.ADOPTED, 2, 2017, False, False, 17),
    ("spain", NapStage.ADOPTED, 2, 2017, False, False, 17),
    ("france", NapStage.ADOPTED, 2, None, False, False, 16),
    ("slovenia", NapStage.ADOPTED, 1, None, True, False, 16),
    ("finland", NapStage.ADOPTED, 2, None, True, False, 15),
    ("italy", NapStage.ADOPTED, 3, None, False, False, 15),
    ("philippines", NapStage.ADOPTED, 3, 2017, False, False, 14),
    ("norway", NapStage.ADOPTED, 3, None, True, False, 14),
)


async def load_demo_edition(session: AsyncSession, now: datetime) -> Edition | None:
    """Edition 1 and its demo updates; does nothing when an edition 1 exists already."""
    if await editions.by_number(session, 1) is not None:
        return None
    people = {p.email: p for p in await session.scalars(
        select(Person).where(Person.email.endswith("@demo.invalid")))}
    members = {m.code: m for m in await session.scalars(select(Member))}
    coordinator = people.get(COORDINATOR)
    if coordinator is None or not members:
        return None
    edition = await editions.create(
        session, title="National action plans, and the road to Berlin",
        period_start=(now - timedelta(days=45)).date(),
        period_end=(now + timedelta(days=14)).date(), language="en",
        submission_deadline=now + timedelta(days=14),
        planned_publication=(now + timedelta(days=21)).date(), now=now, by=coordinator.id)
    await sync_edition_deadline(session, edition, now)
    await _naps(session, members, coordinator, now)
    for item in ITEMS:
        author = people[item.author]
        member = members[item.member] if item.member else None
        at = now - timedelta(days=item.days_ago)
        approved = item.status == UpdateStatus.APPROVED
        row = NationalUpdate(
            member_id=member.id if member else None, organisation=item.organisation,
            author_id=author.id, category=item.category, title=item.title, body=item.body,
            links=list(item.links), visibility=item.visibility, status=item.status,
            section=item.section if approved else "", created_at=at, submitted_at=at,
            decided_at=at + timedelta(days=1) if item.status != UpdateStatus.SUBMITTED else None,
            decided_by=coordinator.id if approved else None,
            edition_id=edition.id if approved else None)
        session.add(row)
        await session.flush()
        session.add(UpdateRevision(update_id=row.id, version=1, category=row.category,
                                   title=row.title, body=row.body, links=list(row.links),
                                   visibility=row.visibility, edited_by=author.id, edited_at=at))
    await editions.choose_spotlight(session, edition.id, members["chile"].id, now=now,
                                    by=coordinator.id)
    await session.flush()
    return edition


async def _naps(session: AsyncSession, members: dict[str, Member], by: Person,
                now: datetime) -> None:
    for code, stage, plan, year, review, indicators, days_ago in NAPS:
        member = members.get(code)
        if member is None or await session.get(NapStatus, member.id) is not None:
            continue
        at = now - timedelta(days=days_ago)
        values = {"stage": stage, "plan_number": plan, "year_adopted": year,
                  "under_review": review, "has_indicators": indicators, "has_budget": False}
        session.add(NapStatus(member_id=member.id, updated_at=at, updated_by=by.id, **values))
        session.add(NapHistory(member_id=member.id, changed_at=at, changed_by=by.id, **values))
