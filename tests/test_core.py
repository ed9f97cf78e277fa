"""The core through transcripts: routing, roles, help, unknown commands, long text."""

from __future__ import annotations

from handlers.types import MAX_TEXT
from tests.conftest import COORDINATOR, FP_CHILE, Transcript


async def test_help_shows_only_the_callers_commands(chat: Transcript) -> None:
    await chat.say("/help", as_=FP_CHILE)
    names = [c["name"] for c in chat.last().context["commands"]]
    assert "whoami" in names and "link" in names
    assert "requests" not in names and "invite" not in names
    await chat.say("/help", as_=COORDINATOR)
    names = [c["name"] for c in chat.last().context["commands"]]
    assert {"requests", "invite", "whoami"} <= set(names)


async def test_a_stranger_sees_only_start_and_help(chat: Transcript) -> None:
    await chat.say("/help", as_="tg-1001", platform="telegram")
    assert [c["name"] for c in chat.last().context["commands"]] == ["start", "help", "cancel"]
    assert "Send /start to join" in chat.text()


async def test_unknown_command_gets_a_hint_and_a_suggestion(chat: Transcript) -> None:
    await chat.say("/hepl", as_=FP_CHILE)
    assert chat.keys == ["errors.unknown_command"]
    assert "Did you mean /help?" in chat.text()
    await chat.say("/frobnicate", as_=FP_CHILE)
    assert chat.last().context["suggestion"] == ""
    assert "Send /help" in chat.text()


async def test_an_unregistered_person_gets_the_onboarding_hint(chat: Transcript) -> None:
    await chat.say("/whoami", as_="tg-1001", platform="telegram")
    assert chat.keys == ["errors.not_registered"]
    assert "/start" in chat.text()
    await chat.say("Chile adopted its second national action plan", as_="tg-1001",
                   platform="telegram")
    assert chat.keys == ["errors.not_registered"]
    await chat.say("hello there", as_="tg-1001", platform="telegram")  # a greeting: the help
    assert chat.keys == ["network.help"] and "Send /start to join" in chat.text()


async def test_a_focal_point_cannot_use_secretariat_commands(chat: Transcript) -> None:
    await chat.say("/requests", as_=FP_CHILE)
    assert chat.keys == ["errors.secretariat_only"]
    await chat.say("/invite fp.germany@demo.invalid", as_=FP_CHILE)
    assert chat.keys == ["errors.secretariat_only"]


async def test_text_over_the_limit_is_refused_with_its_length(chat: Transcript) -> None:
    await chat.say("x" * (MAX_TEXT + 1), as_=FP_CHILE)
    assert chat.keys == ["errors.too_long"]
    assert f"{MAX_TEXT + 1} characters" in chat.text()


async def test_commands_are_case_insensitive_and_accept_a_bot_mention(chat: Transcript) -> None:
    await chat.say("/WhoAmI@fpbot_test_bot", as_=FP_CHILE)
    assert chat.keys == ["network.whoami"]
    assert chat.last().private


async def test_whoami_names_roles_and_the_troika(chat: Transcript) -> None:
    await chat.say("/whoami", as_="fp.germany@demo.invalid")
    text = chat.text()
    assert "Focal point of Germany" in text
    assert "Germany is in the 2018 troika (chair this year)" in text


async def test_troika_is_derived_from_the_chairs(chat: Transcript) -> None:
    await chat.say("/troika", as_=FP_CHILE)
    seats = chat.last().context["seats"]
    assert [(s["member"], s["position"]) for s in seats] == [
        ("Spain", "previous"), ("Germany", "incumbent"), ("Namibia", "next")]
    await chat.say("/troika 2019", as_=FP_CHILE)
    assert [s["member"] for s in chat.last().context["seats"]] == ["Germany", "Namibia"]
    await chat.say("/troika 2031", as_=FP_CHILE)
    assert "no troika" in chat.text()
    await chat.say("/troika soon", as_=FP_CHILE)
    assert chat.keys == ["troika.bad_year"]


async def test_free_text_from_someone_with_no_member_points_to_help(chat: Transcript) -> None:
    await chat.say("Notes for the meeting with the troika next week", as_=COORDINATOR)
    assert chat.keys == ["errors.free_text"]
    await chat.say("Good morning", as_=COORDINATOR)
    assert chat.keys == ["network.help"]
