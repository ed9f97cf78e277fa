"""The newsletter preview page of `fpbot serve`: GET /newsletter/preview/{signed link}.

The link (made by `/newsletter N preview`) is signed with FPBOT_SECRET_KEY and names the
edition, the secretariat officer it was made for and when it expires. A link altered by one
character, past its expiry, or whose holder is no longer in the secretariat gets 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from handlers.newsletter import read_preview_token
from handlers.newsletter_draft import as_html, compile_draft
from storage import editions
from storage.models import NETWORK_ROLES, EditionStatus, Person

if TYPE_CHECKING:
    from bot.app import BotApp

PATH = "/newsletter/preview/{token}"
# The draft holds nothing to run; the page may load nothing from elsewhere either.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def routes(app: BotApp) -> list[BaseRoute]:
    """The preview route, for `web_app` to include."""

    async def preview(request: Request) -> Response:
        now = app.clock.now()
        found = read_preview_token(app.settings.secret_key, request.path_params["token"], now)
        if found is None:
            return PlainTextResponse("This preview link is not valid or has expired.",
                                     status_code=403, headers=HEADERS)
        number, person_id = found
        async with app.db.transaction() as session:
            person = await session.get(Person, person_id)
            if person is None or not any(r.role in NETWORK_ROLES for r in person.roles):
                return PlainTextResponse("This preview link is not valid or has expired.",
                                         status_code=403, headers=HEADERS)
            edition = await editions.by_number(session, number)
            if edition is None:
                return PlainTextResponse("No such edition.", status_code=404, headers=HEADERS)
            if edition.status == EditionStatus.PUBLISHED:
                final = await editions.latest_draft(session, edition.id)
                if final is not None and final.html:
                    return HTMLResponse(final.html, headers=HEADERS)
            draft = await compile_draft(session, edition, app.renderer, now=now, by=person.id,
                                        record=edition.status != EditionStatus.PUBLISHED)
            page = as_html(draft)
        return HTMLResponse(page, headers=HEADERS)

    return [Route(PATH, preview, methods=["GET"])]
