"""Free text (no command, no open form): say what it could mean, and offer only an update.

Text that reads like an update (at least `MIN_WORDS` real words, not a question) is offered to
be filed as one. Everything else gets a plain answer: a greeting or "help" gets the help; thanks
and a thumbs-up an acknowledgement; a lone number, a question, a wish to register for a meeting,
or a word or two the bot cannot place, a sentence saying what it could mean and where to go.
"""

from __future__ import annotations

import re

from handlers import updates
from handlers.context import Context
from handlers.network import help_for
from handlers.routing import available
from handlers.types import Incoming, Outgoing

MIN_WORDS = 4  # words of two letters or more, in any script
WORD = re.compile(r"[^\W\d_]{2,}")
EDGE = " \t\n.,;:!¡?¿…'\"()"

GREETINGS = frozenset({
    "hi", "hello", "hey", "hallo", "hiya", "good morning", "good afternoon", "good evening",
    "greetings", "bonjour", "salut", "hola", "buenos dias", "buenos días", "buenas",
    "start", "menu",
})
HELP = frozenset({
    "help", "help me", "commands", "what can you do", "what do you do", "info", "aide", "ayuda",
})
THANKS = frozenset({
    "thanks", "thank you", "thank you very much", "thanks a lot", "many thanks", "thx", "ty",
    "ok", "okay", "k", "great", "cool", "perfect", "fine", "good", "got it", "noted", "bye",
    "goodbye", "cheers", "merci", "merci beaucoup", "gracias", "muchas gracias", "de nada",
    "👍", "👌", "🙏", "✅", "🙂", "😊", "👏", "❤️", "❤",
})
THANKS_FIRST = frozenset({"thanks", "thank", "thx", "ok", "okay", "cheers", "merci", "gracias"})
QUESTION_WORDS = frozenset({
    "how", "what", "when", "where", "who", "whom", "whose", "why", "which", "can", "could",
    "is", "are", "do", "does",
})
FIRST_PERSON = frozenset({"i", "i'd", "i'm", "i’d", "i’m", "me", "my", "we", "us", "our"})
MEETING_WORDS = frozenset({"meeting", "meetings", "conference", "session", "réunion",
                           "reunión"})
REGISTER_WORDS = frozenset({"register", "registration", "registering", "attend", "attending",
                            "join", "sign", "participate", "inscription", "inscribirme"})
MEETING_COMMANDS = ("meetings", "register")  # whichever of these the bot has, it points to


def _folded(text: str) -> str:
    return " ".join(text.casefold().split()).strip(EDGE)


async def answer(msg: Incoming, ctx: Context) -> list[Outgoing]:
    """Answer free text: the help, a plain sentence, or the offer to file it as an update."""
    text = msg.text.strip()
    folded = _folded(text)
    words = [w.strip(EDGE) for w in folded.replace("’", "'").split()]
    if folded in GREETINGS or folded in HELP or (
            words and words[0] in GREETINGS | {"help"} and len(words) <= 3):
        return [help_for(ctx.commands, ctx)]
    if ctx.person is None:
        return [Outgoing("errors.not_registered", {"command": ""})]
    members = bool(ctx.own_members())
    short = {"text": text[:40], "members": members}
    if folded in THANKS or (words and words[0] in THANKS_FIRST and len(words) <= 5):
        return [Outgoing("free_text.thanks", short)]
    if not WORD.search(folded):
        return [Outgoing("free_text.number" if folded.isdigit() else "free_text.unclear", short)]
    if _about_meetings(words):
        return [_meetings(ctx, members)]
    if text.endswith("?") or words[0] in QUESTION_WORDS:
        return [Outgoing("free_text.question", short)]
    if len(WORD.findall(folded)) < MIN_WORDS:
        return [Outgoing("free_text.unclear", short)]
    return await updates.offer(msg, ctx)


def _about_meetings(words: list[str]) -> bool:
    """Someone asking to take part in a meeting ("I want to register for the next meeting")."""
    bare = set(words)
    wants = bool(bare & REGISTER_WORDS) and (bool(bare & FIRST_PERSON)
                                            or words[0] in QUESTION_WORDS)
    return wants and bool(bare & (MEETING_WORDS | {"register", "registration"}))


def _meetings(ctx: Context, members: bool) -> Outgoing:
    """Point to the meeting commands the bot has for this person, or to /help if none."""
    commands = [c for c in available(ctx.commands, ctx) if c.name in MEETING_COMMANDS]
    return Outgoing("free_text.meetings", {
        "commands": [{"name": c.name, "usage": c.usage_for(ctx), "text": ctx.label(c.help)}
                     for c in commands],
        "members": members,
    })
