"""The observatory: full-text search over approved updates, in the database's own search engine.

SQLite uses FTS5 (bm25 ranking), PostgreSQL a tsvector with a GIN index (ts_rank). Network-only
updates are shown only to people of the Network; Chatham House updates never show who or which
member filed them, and a `member:` filter leaves them out so as not to attribute them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import and_, func, literal_column, select, text
from sqlalchemy.sql.elements import ColumnElement

from handlers.context import Context
from handlers.network import find_member
from handlers.types import Incoming, Outgoing, UserError
from storage.models import (
    MEMBER_ROLES,
    NationalUpdate,
    UpdateCategory,
    UpdateStatus,
    Visibility,
)

LIMIT = 10
WORD = re.compile(r"\w+", re.UNICODE)
FILTER = re.compile(r"^(member|category|since):(.+)$", re.IGNORECASE)
# Words too common to search on (PostgreSQL's english configuration drops the same).
STOP_WORDS = frozenset("""a an and are as at be but by for from has have in into is it its of on or
such that the their then there these they this to was were will with""".split())


# Acronyms of the field, searched as themselves or spelled out ("NAP" finds "national action
# plan" too). Keys are lower-case words as `parse` keeps them.
ACRONYMS = {
    "nap": "national action plan",
    "naps": "national action plans",
    "wps": "women peace and security",
    "cso": "civil society",
    "csos": "civil society",
    "unscr": "security council resolution",
    "gbv": "gender based violence",
    "sgbv": "sexual and gender based violence",
    "crsv": "conflict related sexual violence",
    "ddr": "disarmament demobilization and reintegration",
}


@dataclass
class Query:
    words: list[str] = field(default_factory=list)
    member: str = ""
    category: str = ""
    since: date | None = None
    filters: list[str] = field(default_factory=list)  # as typed, for the reply to repeat


def parse(args: str) -> Query:
    """Split `/search` arguments into words and filters; odd characters are dropped."""
    query = Query()
    for token in args.split():
        match = FILTER.match(token)
        if match:
            key, value = match.group(1).lower(), match.group(2)
            query.filters.append(f"{key}:{value}")
            if key == "since":
                try:
                    query.since = date.fromisoformat(value)
                except ValueError:
                    raise UserError("search.bad_since", text=value) from None
            else:
                setattr(query, key, value.replace("_", " ") if key == "member" else value)
            continue
        query.words += [w for w in WORD.findall(token.lower()) if w not in STOP_WORDS]
    return query


def _insider(ctx: Context) -> bool:
    """People of the Network: focal points, alternates, the secretariat."""
    return ctx.is_secretariat or any(r.role in MEMBER_ROLES for r in ctx.roles)


async def search(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Find approved updates by their words, optionally by member, category and date."""
    query = parse(msg.args)
    if not query.words and not query.filters:
        raise UserError("search.need_words")
    conditions: list[ColumnElement[bool]] = [
        NationalUpdate.status.in_([UpdateStatus.APPROVED, UpdateStatus.PUBLISHED])]
    if not _insider(ctx):
        conditions.append(NationalUpdate.visibility == Visibility.PUBLIC)
    if query.member:
        member = await find_member(ctx.session, query.member)
        if member is None:
            raise UserError("forms.unknown_member", text=query.member)
        conditions += [NationalUpdate.member_id == member.id,
                       NationalUpdate.visibility != Visibility.CHATHAM]
    if query.category:
        category = _category(ctx, query.category)
        conditions.append(NationalUpdate.category == category)
    if query.since:
        conditions.append(NationalUpdate.submitted_at
                          >= datetime.combine(query.since, datetime.min.time(), UTC))
    hits = await _match(ctx, query.words, and_(*conditions))
    return [Outgoing("search.results", {
        "query": " ".join(query.words) or " ".join(query.filters),
        "hits": [_hit(ctx, row) for row in hits],
        "limit": LIMIT,
    })]


def _category(ctx: Context, text_: str) -> str:
    wanted = text_.casefold().replace("-", "_")
    for c in UpdateCategory:
        if wanted in (c.value, ctx.label(f"updates.category_{c.value}").casefold()):
            return c.value
    raise UserError("search.bad_category",
                    categories=", ".join(c.value for c in UpdateCategory))


def _groups(words: list[str]) -> list[list[str]]:
    """Each word with what it may also be written as: ["nap", "national action plan"]."""
    return [[w, ACRONYMS[w]] if w in ACRONYMS else [w] for w in words]


async def _match(ctx: Context, words: list[str], where: ColumnElement[bool]) -> list[NationalUpdate]:
    """The approved updates matching every word (or its spelled-out form), best first;
    without words, the latest matching `where` (a search by filters only)."""
    if not words:
        latest = (select(NationalUpdate).where(where)
                  .order_by(NationalUpdate.submitted_at.desc(), NationalUpdate.id.desc()))
        return list(await ctx.session.scalars(latest.limit(LIMIT)))
    dialect = ctx.session.bind.dialect.name if ctx.session.bind else "sqlite"
    if dialect == "sqlite":
        # Each word or phrase quoted (no FTS5 syntax gets through): ("nap" OR "national
        # action plan") AND "chile".
        fts = " AND ".join("(" + " OR ".join(f'"{w}"' for w in group) + ")"
                           for group in _groups(words))
        ranked = (
            select(literal_column("rowid").label("id"), literal_column("bm25(update_fts)").label("rank"))
            .select_from(text("update_fts"))
            .where(text("update_fts MATCH :fts").bindparams(fts=fts))
            .subquery()
        )
        stmt = (select(NationalUpdate).join(ranked, ranked.c.id == NationalUpdate.id)
                .where(where).order_by(ranked.c.rank, NationalUpdate.submitted_at.desc()))
    else:
        document = func.to_tsvector(literal_column("'english'"),
                                    NationalUpdate.title + " " + NationalUpdate.body)
        english: ColumnElement[Any] = literal_column("'english'")
        tsquery: ColumnElement[Any] | None = None
        for group in _groups(words):
            either: ColumnElement[Any] = func.plainto_tsquery(english, group[0])
            for spelled in group[1:]:
                either = either.op("||")(func.phraseto_tsquery(english, spelled))
            tsquery = either if tsquery is None else tsquery.op("&&")(either)
        stmt = (select(NationalUpdate).where(where, document.op("@@")(tsquery))
                .order_by(func.ts_rank(document, tsquery).desc(),
                          NationalUpdate.submitted_at.desc()))
    return list(await ctx.session.scalars(stmt.limit(LIMIT)))


def _hit(ctx: Context, row: NationalUpdate) -> dict[str, Any]:
    chatham = row.visibility == Visibility.CHATHAM
    body = " ".join(row.body.split())
    return {
        "id": row.id,
        "title": row.title,
        "member": "" if chatham else row.source,
        "chatham": chatham,
        "category": ctx.label(f"updates.category_{row.category}"),
        "date": row.submitted_at,
        "excerpt": body[:220] + ("…" if len(body) > 220 else ""),
        "network_only": row.visibility == Visibility.NETWORK,
    }
