"""Demo data: the 78 members of December 2017, the 2017-2019 chairs and a few demo people.

Demo people are visibly marked: "(demo)" in their names, addresses at demo.invalid (a domain
that can never receive mail), and `is_demo` set.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.deadlines import load_demo_deadlines
from storage.models import Person
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


async def load_demo(session: AsyncSession, now: datetime) -> tuple[int, ImportReport]:
    """Load members, chairs and demo people; safe to run again."""
    added = await load_members(session)
    for year, code in GUIDELINE_CHAIRS.items():
        await set_chair(session, year, code)
    report = await import_roster(session, DEMO_ROSTER, now)
    if report.ok:
        await session.execute(
            update(Person).where(Person.email.endswith(DEMO_DOMAIN)).values(is_demo=True)
        )
        await load_demo_deadlines(session, now)
    return added, report
