"""Every sentence the bot says, as Jinja2 templates by name and locale, rendered for each platform."""

from messages.render import FORMATS, Renderer, escape_html, escape_mrkdwn

__all__ = ["FORMATS", "Renderer", "escape_html", "escape_mrkdwn"]
