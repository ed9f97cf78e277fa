"""The bot's use cases. This file lists every command and form: the bot's whole surface.

Commands appear in /help in this order; each says who may use it (see `routing.Access`).
"""

from handlers import (
    deadlines,
    digest,
    forms,
    free_text,
    meeting_reminders,  # noqa: F401  (plugs meetings and editions into reminders, digest)
    meetings,
    nap,
    network,
    newsletter,
    onboarding,
    review,
    search,
    updates,
    voices,
)
from handlers.forms import Form
from handlers.routing import Access, Command

COMMANDS: tuple[Command, ...] = (
    Command("start", onboarding.start, Access.ANYONE, "help.start", usage="[code]",
            personal=True, for_strangers=True),
    Command("help", network.help, Access.ANYONE, "help.help"),
    Command("cancel", forms.cancel_command, Access.ANYONE, "help.cancel"),
    Command("whoami", network.whoami, Access.REGISTERED, "help.whoami", personal=True),
    Command("link", onboarding.link, Access.REGISTERED, "help.link", usage="[code]",
            personal=True),
    Command("update", updates.start_update, Access.REGISTERED, "help.update", usage="[member]"),
    Command("myupdates", updates.mine, Access.REGISTERED, "help.myupdates", usage="[n]",
            personal=True),
    Command("edit", updates.edit, Access.REGISTERED, "help.edit", usage="n", personal=True),
    Command("withdraw", updates.withdraw, Access.REGISTERED, "help.withdraw", usage="n",
            personal=True),
    Command("search", search.search, Access.REGISTERED, "help.search",
            usage="words [member:X] [category:Y] [since:YYYY-MM-DD]", personal=True),
    Command("nap", nap.nap, Access.REGISTERED, "help.nap", usage="[member|all|update|history]"),
    Command("troika", network.show_troika, Access.REGISTERED, "help.troika", usage="[year]"),
    Command("meetings", meetings.list_meetings, Access.REGISTERED, "help.meetings"),
    Command("meeting", meetings.meeting, Access.REGISTERED, "help.meeting",
            usage="n", staff_usage="n | new | edit n | cancel n"),
    Command("register", meetings.register, Access.REGISTERED, "help.register", usage="[n]",
            personal=True),
    Command("unregister", meetings.unregister, Access.REGISTERED, "help.unregister",
            usage="n [email]", personal=True),
    Command("myregistrations", meetings.my_registrations, Access.REGISTERED,
            "help.myregistrations", personal=True),
    Command("deadlines", deadlines.deadlines, Access.REGISTERED, "deadlines.help_deadlines",
            personal=True),
    Command("deadline", deadlines.deadline, Access.REGISTERED, "deadlines.help_deadline",
            usage="done N | new", personal=True),
    Command("actions", deadlines.actions, Access.REGISTERED, "deadlines.help_actions",
            usage="[all]"),
    Command("action", deadlines.action, Access.REGISTERED, "deadlines.help_action",
            usage="done N | new", personal=True),
    Command("away", deadlines.away, Access.REGISTERED, "deadlines.help_away",
            usage="until DATE | in 2 weeks | off", personal=True),
    Command("timezone", deadlines.timezone, Access.REGISTERED, "deadlines.help_timezone",
            usage="[Area/City]", personal=True),
    Command("invite", onboarding.invite, Access.SECRETARIAT, "help.invite", usage="email",
            personal=True),
    Command("review", review.review, Access.SECRETARIAT, "help.review",
            usage="[n | approve|changes|reject n [text]]", personal=True),
    Command("requests", onboarding.requests, Access.SECRETARIAT, "help.requests",
            usage="[approve|reject n [reason]]", personal=True),
    Command("participants", meetings.participants, Access.SECRETARIAT, "help.participants",
            usage="n [pending|csv|list|add email|attended email]", personal=True),
    Command("editions", newsletter.list_editions, Access.SECRETARIAT, "help.editions"),
    Command("edition", newsletter.edition, Access.SECRETARIAT, "help.edition",
            usage="new|N [move|drop|add|spotlight|close|publish ...]", personal=True),
    Command("newsletter", newsletter.newsletter, Access.SECRETARIAT, "help.newsletter",
            usage="[N] [html|md|docx|preview|archive]"),
    Command("digest", digest.digest, Access.SECRETARIAT, "deadlines.help_digest", personal=True),
)

FORMS: dict[str, Form] = {
    form.name: form
    for form in (onboarding.MEMBERSHIP_FORM, updates.UPDATE_FORM, review.NOTE_FORM,
                 nap.NAP_FORM, meetings.MEETING_FORM, meetings.REGISTER_FORM,
                 newsletter.EDITION_FORM, voices.VOICE_FORM, deadlines.DEADLINE_FORM,
                 deadlines.ACTION_FORM)
}

# What a registered person's free text (no command, no open form) becomes.
FREE_TEXT = free_text.answer

__all__ = ["COMMANDS", "FORMS", "FREE_TEXT"]
