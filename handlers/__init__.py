"""The bot's use cases. This file lists every command and form: the bot's whole surface.

Commands appear in /help in this order; each says who may use it (see `routing.Access`).
"""

from handlers import forms, network, onboarding
from handlers.forms import Form
from handlers.routing import Access, Command

COMMANDS: tuple[Command, ...] = (
    Command("start", onboarding.start, Access.ANYONE, "help.start", usage="[code]"),
    Command("help", network.help, Access.ANYONE, "help.help"),
    Command("cancel", forms.cancel_command, Access.ANYONE, "help.cancel"),
    Command("whoami", network.whoami, Access.REGISTERED, "help.whoami", personal=True),
    Command("link", onboarding.link, Access.REGISTERED, "help.link", usage="[code]",
            personal=True),
    Command("troika", network.show_troika, Access.REGISTERED, "help.troika", usage="[year]"),
    Command("invite", onboarding.invite, Access.SECRETARIAT, "help.invite", usage="email",
            personal=True),
    Command("requests", onboarding.requests, Access.SECRETARIAT, "help.requests",
            usage="[approve|reject n [reason]]", personal=True),
)

FORMS: dict[str, Form] = {
    form.name: form for form in (onboarding.MEMBERSHIP_FORM,)
}

__all__ = ["COMMANDS", "FORMS"]
