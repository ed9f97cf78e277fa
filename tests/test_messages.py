"""Every sentence lives in messages/: each key the code names exists, and user text is escaped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from handlers import COMMANDS, FORMS
from messages import Renderer
from messages.render import ShadowedHelper, UnknownMessage

ROOT = Path(__file__).resolve().parent.parent
KEY = re.compile(r"""(?:Outgoing|UserError|label|render)\(\s*["']([a-z_]+\.[a-z_]+)["']""")


def keys_named_in(folder: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        found |= set(KEY.findall(path.read_text(encoding="utf-8")))
    return found


@pytest.mark.parametrize("folder", ["handlers", "bot"])
def test_every_key_the_code_names_exists(folder: str, renderer: Renderer) -> None:
    known = set(renderer.keys("en"))
    named = keys_named_in(folder)
    assert named or folder != "handlers", "the pattern found no keys at all"
    assert sorted(named - known) == []


def test_every_command_and_form_field_has_its_sentences(renderer: Renderer) -> None:
    known = set(renderer.keys("en"))
    for command in COMMANDS:
        assert command.help in known, command.name
    for form in FORMS.values():
        assert form.title in known and form.submit_label in known
        for field in form.fields:
            assert field.label in known and (field.hint is None or field.hint in known)


def test_user_text_cannot_forge_markup(renderer: Renderer) -> None:
    hostile = {"id": 1, "name": "<b>boss</b> & <!channel>", "title": '"quoted"',
               "ministry": "<https://evil.example|UN>", "email": "a@b.c", "member": "Chile",
               "platform": "slack"}
    html = renderer.render("onboarding.request_for_secretariat", "en", "html", **hostile)
    assert "&lt;b&gt;boss&lt;/b&gt; &amp; &lt;!channel&gt;" in html and "<b>boss" not in html
    assert "&quot;quoted&quot;" in html
    mrkdwn = renderer.render("onboarding.request_for_secretariat", "en", "mrkdwn", **hostile)
    assert "&lt;!channel&gt;" in mrkdwn and "&lt;https://evil.example|UN&gt;" in mrkdwn
    assert '"quoted"' in mrkdwn  # Slack decodes no entity but & < >
    plain = renderer.render("onboarding.request_for_secretariat", "en", "plain", **hostile)
    assert "<b>boss</b> & <!channel>" in plain


def test_markup_helpers_follow_the_platform(renderer: Renderer) -> None:
    ctx = {"title": "A & B", "question": "Q?", "hint": "", "index": 1, "total": 2,
           "optional": False, "current": "", "files": False}
    assert renderer.render("forms.question", "en", "html", **ctx).startswith("<b>A &amp; B</b>")
    assert renderer.render("forms.question", "en", "mrkdwn", **ctx).startswith("*A &amp; B*")
    assert renderer.render("forms.question", "en", "plain", **ctx).startswith("A & B · 1/2")


def test_an_unknown_locale_falls_back_to_english(renderer: Renderer) -> None:
    assert renderer.render("forms.back", "fr") == "Back"


def test_an_unknown_key_is_a_bug_not_a_blank(renderer: Renderer) -> None:
    with pytest.raises(UnknownMessage):
        renderer.render("nothing.here")


def test_no_handler_builds_a_reply_from_a_literal_sentence() -> None:
    literal = re.compile(r"""Outgoing\(\s*f?["'][^"']*\s[^"']*["']""")
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "handlers").rglob("*.py")
                 if literal.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


@pytest.mark.parametrize("helper", ["b", "i", "code", "link"])
def test_a_context_key_may_not_hide_a_helper(renderer: Renderer, helper: str) -> None:
    context = {"one_time_code": "ABCD-EFGH", "minutes": 30, helper: "x"}
    with pytest.raises(ShadowedHelper, match=f"'{helper}' would hide the renderer's helper"):
        renderer.render("onboarding.link_code", "en", "html", **context)


def test_the_readers_time_zone_may_replace_the_default(renderer: Renderer) -> None:
    from datetime import UTC, datetime

    text = renderer.render("onboarding.code_expired", "en", "plain",
                           expired=datetime(2018, 3, 2, 9, 0, tzinfo=UTC), tz="Europe/Berlin")
    assert "2 March 2018, 10:00 (Europe/Berlin)" in text
