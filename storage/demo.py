"""Demo data: the 78 members of December 2017, the 2017-2019 chairs and a few demo people.

Demo people are visibly marked: "(demo)" in their names, addresses at demo.invalid (a domain
that can never receive mail), and `is_demo` set.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.deadlines import load_demo_chairs, load_demo_deadlines
from storage.edition_demo import load_demo_edition
from storage.meeting_deadlines import sync_demo_meetings
from storage.meetings import load_demo_meetings
from storage.models import Chair, Member, Person
from storage.roster import GUIDELINE_CHAIRS, ImportReport, import_roster, load_members, set_chair

DEMO_ROSTER = """\
email,name,role,members,title,ministry,timezone,locale
coordinator@demo.invalid,Amina Diallo (demo),secretariat,,Network Coordinator,"UN-Women, Peace and Security Section",America/New_York,en
fp.chile@demo.invalid,Catalina Rojas (demo),focal_point,chile,Head of Human Rights Division,Ministry of Foreign Affairs of Chile,America/Santiago,en
alt.chile@demo.invalid,Tomás Fuentes (demo),alternate,chile,Policy Officer,Ministry of Defence of Chile,America/Santiago,en
fp.germany@demo.invalid,Julia Becker (demo),focal_point,germany,Head of Division,Federal Foreign Office,Europe/Berlin,en
fp.namibia@demo.invalid,Ndapewa Shikongo (demo),focal_point,namibia,Deputy Director,Ministry of International Relations and Cooperation,Africa/Windhoek,en
fp.spain@demo.invalid,Lucía Martín (demo),focal_point,spain,Ambassador-at-large for WPS,Ministry of Foreign Affairs of Spain,Europe/Madrid,en
fp.au@demo.invalid,Bineta Ndiaye (demo),focal_point,african-union,Special Envoy's Office,African Union Commission,Africa/Addis_Ababa,en
wilpf@demo.invalid,Sofia Lindqvist (demo),civil_society,,Programme Manager,Women's International League for Peace and Freedom,Europe/Stockholm,en
"""

DEMO_DOMAIN = "@demo.invalid"


async def load_demo(session: AsyncSession, now: datetime, *,
                    newsletter: bool = False) -> tuple[int, ImportReport]:
    """Load members, chairs and demo people; safe to run again.

    `newsletter` adds newsletter edition 1 with its demo updates and NAP statuses (`fpbot demo`).
    """
    added = await load_members(session)
    for year, code in GUIDELINE_CHAIRS.items():
        await set_chair(session, year, code)
    report = await import_roster(session, DEMO_ROSTER, now)
    if report.ok:
        await session.execute(
            update(Person).where(Person.email.endswith(DEMO_DOMAIN)).values(is_demo=True)
        )
        await load_demo_chairs(session, now)  # first: this year's demo chair hosts a meeting
        await load_demo_meetings(session, now)
        if newsletter:
            await load_demo_edition(session, now)
        await load_demo_deadlines(session, now)  # after the edition: its deadline is the demo's
        await sync_demo_meetings(session, now)
    return added, report


async def demo_people(session: AsyncSession) -> list[tuple[str, str]]:
    """Each demo person's e-mail and what they are, in roster order (for `fpbot demo`)."""
    names = {m.code: m.name for m in await session.scalars(select(Member))}
    chairs: dict[str, list[str]] = {}
    for chair in await session.scalars(select(Chair).order_by(Chair.year)):
        chairs.setdefault(chair.member.code, []).append(
            f"demo chair {chair.year}" if chair.is_demo else f"chair {chair.year}")
    people = []
    for row in csv.DictReader(io.StringIO(DEMO_ROSTER)):
        role = row["role"].replace("_", " ")
        codes = [c for c in row["members"].split(";") if c]
        what = f"{role} of {', '.join(names.get(c, c) for c in codes)}" if codes else role
        years = [y for c in codes for y in chairs.get(c, [])]
        if years:
            what += f" ({', '.join(years)})"
        people.append((row["email"], f"{what}: {row['name']}"))
    return people
