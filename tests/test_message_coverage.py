"""The suite's own promises: a broken reply fails the test that gets it, an unsaid key fails the run."""

from __future__ import annotations

import pytest

from handlers.types import Choice, Outgoing
from messages import Renderer
from messages.render import ShadowedHelper
from tests.message_coverage import RenderLog, render_everywhere


def test_a_reply_is_rendered_in_every_format(renderer: Renderer) -> None:
    texts = render_everywhere(renderer, Outgoing("onboarding.link_code",
                                                 {"one_time_code": "AB<C", "minutes": 30}))
    assert "<code>AB&lt;C</code>" in texts["html"]
    assert "`AB&lt;C`" in texts["mrkdwn"]
    assert "Your link code is AB<C." in texts["plain"]


@pytest.mark.parametrize(("reply", "error"), [
    (Outgoing("onboarding.link_code", {"code": "ABCD", "minutes": 30}), ShadowedHelper),
    (Outgoing("onboarding.link_code", {"minutes": 30}), Exception),  # a missing variable
    (Outgoing("forms.back", choices=(Choice("/x", " "),)), AssertionError),  # a blank button
    (Outgoing("forms.back", choices=(Choice("/x" * 40, "Go"),)), ValueError),  # > 64 bytes
])
def test_a_broken_reply_fails_whoever_receives_it(renderer: Renderer, reply: Outgoing,
                                                  error: type[Exception]) -> None:
    with pytest.raises(error):
        render_everywhere(renderer, reply)


def test_a_key_nobody_says_is_named(renderer: Renderer) -> None:
    log = RenderLog()
    log.record("forms.back", {})
    problems = log.catalog_problems(renderer)
    assert "en/forms.back: no test makes the bot say it" not in problems
    assert "en/onboarding.link_code: no test makes the bot say it" in problems


def test_a_context_that_no_longer_renders_is_named(renderer: Renderer) -> None:
    log = RenderLog()
    log.record("onboarding.link_code", {"minutes": 30})  # the code went missing
    problems = log.catalog_problems(renderer)
    assert any(p.startswith("en/onboarding.link_code (html) with {'minutes': 30}: Undefined")
               for p in problems)
