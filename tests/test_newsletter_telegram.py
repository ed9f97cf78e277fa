"""Through real python-telegram-bot against the fake Bot API: the draft arrives as a document."""

from __future__ import annotations

import io

from docx import Document

from storage.edition_demo import load_demo_edition
from tests import test_telegram_e2e as telegram_e2e
from tests.conftest import COORDINATOR, FP_CHILE
from tests.test_telegram_e2e import World, sent_to

# The Telegram end-to-end fixtures: a fake Bot API and a bot process driven against it.
fake = telegram_e2e.fake
world = telegram_e2e.world


async def test_the_secretariat_gets_the_word_draft_as_a_document(world: World) -> None:
    async with world.db.transaction() as session:
        await load_demo_edition(session, world.clock.now())
    code = await world.invite_code(COORDINATOR)
    await world.start()
    world.say(f"/start {code}", chat_id=42)
    await world.replies(1)
    await world.settle()
    world.say("/newsletter 1 docx", chat_id=42)
    [doc] = await world.replies(1, "sendDocument")
    await world.settle()
    assert doc.params["document"]["filename"] == "newsletter-edition-1-draft-1.docx"
    assert doc.params["caption"] == ("Draft 1 of edition 1 (National action plans, and the road "
                                     "to Berlin), docx: 8 items.")
    headings = [p.text for p in Document(io.BytesIO(doc.params["document"]["content"])).paragraphs
                if p.style is not None and p.style.name == "Heading 1"]
    assert "Focal point spotlight" in headings and "Upcoming events" in headings
    menus = {(c.params["scope"]["type"], c.params["scope"].get("chat_id")):
             [x["command"] for x in c.params["commands"]]
             for c in world.fake.calls_to("setMyCommands")}
    assert {"edition", "editions", "newsletter"} <= set(menus[("chat", 42)])


async def test_a_focal_point_is_not_offered_the_newsletter_commands(world: World) -> None:
    code = await world.invite_code(FP_CHILE)
    await world.start()
    world.say(f"/start {code}", chat_id=43)
    await world.replies(1)
    await world.settle()
    world.say("/newsletter 1 docx", chat_id=43)
    await world.replies(2)
    await world.settle()
    assert sent_to(world.fake, 43)[-1].params["text"] == (
        "Only the secretariat can use /newsletter. Send /help to see your commands.")
    assert sent_to(world.fake, 43, "sendDocument") == []
    menus = {(c.params["scope"]["type"], c.params["scope"].get("chat_id")):
             [x["command"] for x in c.params["commands"]]
             for c in world.fake.calls_to("setMyCommands")}
    assert not {"edition", "editions", "newsletter"} & set(menus[("chat", 43)])
