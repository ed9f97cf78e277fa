"""One-time codes: invitations for people on the roster, and links for a second account.

Only a hash of each code is stored; the code itself is shown once, to whoever asked for it.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Invitation

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud, typed on phones
CODE_LENGTH = 8


def new_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:]}"


def code_hash(code: str) -> str:
    """The stored form of a code; case, spaces and dashes do not matter."""
    normalised = "".join(ch for ch in code.upper() if ch.isalnum())
    return hashlib.sha256(normalised.encode()).hexdigest()


async def create_invitation(
    session: AsyncSession,
    person_id: int,
    purpose: str,
    *,
    now: datetime,
    ttl: timedelta,
    created_by: int | None = None,
) -> tuple[str, Invitation]:
    """A new code for `person_id`, valid for `ttl`."""
    code = new_code()
    invitation = Invitation(code_hash=code_hash(code), purpose=purpose, person_id=person_id,
                            created_by=created_by, created_at=now, expires_at=now + ttl)
    session.add(invitation)
    await session.flush()
    return code, invitation
