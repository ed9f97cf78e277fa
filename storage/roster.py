"""The Network's reference data and roster: members, chairs, people and their roles.

`import_roster` checks every row before writing any: a file with a bad row imports nothing and
every problem is reported with its line number. Importing the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import available_timezones

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Chair, Member, Person, Role, RoleName

MEMBERS_CSV = Path(__file__).parent / "data" / "members.csv"
ROSTER_COLUMNS = ("email", "name", "role", "members", "title", "ministry", "timezone", "locale")
REQUIRED_COLUMNS = ("email", "name", "role")
NEEDS_MEMBER = frozenset({RoleName.FOCAL_POINT, RoleName.ALTERNATE})
EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
LOCALES = ("en", "fr", "es")

# The chairs named in the Technical Operative Guidelines (December 2017).
GUIDELINE_CHAIRS = {2017: "spain", 2018: "germany", 2019: "namibia"}

# The regions of members.csv: the UN regional groups of States, and the regional organizations.
REGIONS = {
    "african": "African States",
    "asia_pacific": "Asia-Pacific States",
    "eastern_european": "Eastern European States",
    "latin_american_caribbean": "Latin American and Caribbean States",
    "western_european_other": "Western European and other States",
    "regional_organization": "Regional organizations",
}
REGIONAL_ORGANIZATION = "regional_organization"


@dataclass
class ImportReport:
    """What an import did, or why it did nothing."""

    errors: list[str] = field(default_factory=list)
    people_added: int = 0
    people_updated: int = 0
    roles_added: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


async def load_members(session: AsyncSession, path: Path = MEMBERS_CSV, *, demo: bool = False) -> int:
    """Add the members listed in `path` that the store lacks; returns how many were added."""
    existing = set(await session.scalars(select(Member.code)))
    added = 0
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["code"] in existing:
                continue
            session.add(Member(code=row["code"], name=row["name"], kind=row["kind"],
                               region=row["region"], aliases=row.get("aliases") or "",
                               is_demo=demo))
            added += 1
    await session.flush()
    return added


def _code_for(name: str) -> str:
    """A member code from its name: `Côte d'Ivoire` -> `cote-d-ivoire`."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:28].strip("-") or "member"


async def add_member(session: AsyncSession, name: str, region: str) -> Member:
    """A new member of the Network (`region`: a key of REGIONS), or the one already so named."""
    existing = await session.scalar(select(Member).where(Member.name == name))
    if existing is not None:
        return existing
    base = _code_for(name)
    taken = set(await session.scalars(select(Member.code).where(Member.code.startswith(base))))
    code = next(c for n in range(1, len(taken) + 2)
                if (c := base if n == 1 else f"{base}-{n}") not in taken)
    kind = "regional_organization" if region == REGIONAL_ORGANIZATION else "state"
    member = Member(code=code, name=name, kind=kind, region=REGIONS[region])
    session.add(member)
    await session.flush()
    return member


async def set_chair(session: AsyncSession, year: int, member_code: str) -> None:
    member = await session.scalar(select(Member).where(Member.code == member_code))
    if member is None:
        raise LookupError(f"unknown member {member_code!r}")
    chair = await session.get(Chair, year)
    if chair is None:
        session.add(Chair(year=year, member_id=member.id))
    else:
        chair.member_id = member.id
    await session.flush()


@dataclass(frozen=True)
class _Row:
    line: int
    email: str
    name: str
    roles: tuple[str, ...]
    members: tuple[str, ...]
    title: str
    ministry: str
    timezone: str
    locale: str


def _parse(text: str, member_codes: dict[str, int]) -> tuple[list[_Row], list[str]]:
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip().lower() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        return [], [f"line 1: missing column{'s' if len(missing) > 1 else ''}: "
                    f"{', '.join(missing)} (expected: {', '.join(ROSTER_COLUMNS)})"]
    unknown_cols = [c for c in columns if c not in ROSTER_COLUMNS]
    errors = [f"line 1: unknown column: {c}" for c in unknown_cols]
    zones = available_timezones()
    rows: list[_Row] = []
    seen: dict[str, int] = {}
    for raw in reader:
        line = reader.line_num
        values = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        problems: list[str] = []
        email = values.get("email", "").lower()
        if not EMAIL.match(email):
            problems.append(f"invalid e-mail {email!r}" if email else "e-mail is empty")
        elif email in seen:
            problems.append(f"duplicate e-mail {email} (already on line {seen[email]})")
        else:
            seen[email] = line
        name = values.get("name", "")
        if not name:
            problems.append("name is empty")
        roles = tuple(r.strip().lower().replace(" ", "_")
                      for r in values.get("role", "").split(";") if r.strip())
        if not roles:
            problems.append("role is empty")
        for role in roles:
            if role not in {r.value for r in RoleName}:
                problems.append(f"unknown role {role!r} "
                                f"(one of: {', '.join(r.value for r in RoleName)})")
        members = tuple(m.strip().lower() for m in values.get("members", "").split(";") if m.strip())
        for code in members:
            if code not in member_codes:
                problems.append(f"unknown member {code!r}")
        for role in roles:
            if role in NEEDS_MEMBER and not members:
                article = "an" if role[0] in "aeiou" else "a"
                problems.append(f"{article} {role.replace('_', ' ')} needs a member")
        tz = values.get("timezone") or "UTC"
        if tz not in zones:
            problems.append(f"unknown time zone {tz!r}")
        locale = values.get("locale") or "en"
        if locale not in LOCALES:
            problems.append(f"unknown locale {locale!r}")
        if problems:
            errors.extend(f"line {line}: {p}" for p in problems)
            continue
        rows.append(_Row(line, email, name, roles, members, values.get("title", ""),
                         values.get("ministry", ""), tz, locale))
    if not rows and not errors:
        errors.append("the file has no rows")
    return rows, errors


async def import_roster(session: AsyncSession, text: str, now: datetime) -> ImportReport:
    """Upsert people by e-mail and add their roles; all or nothing."""
    member_ids = {m.code: m.id for m in await session.scalars(select(Member))}
    rows, errors = _parse(text, member_ids)
    report = ImportReport(errors=errors)
    if errors:
        return report
    for row in rows:
        person = await session.scalar(select(Person).where(Person.email == row.email))
        if person is None:
            person = Person(email=row.email, name=row.name, title=row.title,
                            ministry=row.ministry, timezone=row.timezone, locale=row.locale,
                            created_at=now)
            session.add(person)
            await session.flush()
            report.people_added += 1
        else:
            before = (person.name, person.title, person.ministry, person.timezone, person.locale)
            after = (row.name, row.title, row.ministry, row.timezone, row.locale)
            if before != after:
                (person.name, person.title, person.ministry,
                 person.timezone, person.locale) = after
                report.people_updated += 1
        held = {(r.role, r.member_id) for r in await person.awaitable_attrs.roles}
        for role in row.roles:
            targets: Iterable[int | None] = [member_ids[c] for c in row.members] or [None]
            if role not in NEEDS_MEMBER and role != RoleName.CIVIL_SOCIETY:
                targets = [None]
            for member_id in targets:
                if (role, member_id) not in held:
                    session.add(Role(person_id=person.id, member_id=member_id, role=role))
                    held.add((role, member_id))
                    report.roles_added += 1
        await session.flush()
    return report


async def export_roster(session: AsyncSession) -> str:
    """The roster as CSV, one row per person, ready to import again."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ROSTER_COLUMNS)
    people = await session.scalars(select(Person).order_by(Person.email))
    for person in people:
        roles = sorted({r.role for r in person.roles})
        codes = sorted({r.member.code for r in person.roles if r.member is not None})
        writer.writerow([person.email, person.name, ";".join(roles), ";".join(codes),
                         person.title, person.ministry, person.timezone, person.locale])
    return out.getvalue()
