"""The Slack adapter's pure parts: payloads to `Incoming`, replies to Block Kit."""

from __future__ import annotations

import json

from bot.adapters import slack_blocks as kit
from bot.adapters.slack import (
    action_to_incoming,
    command_to_incoming,
    inbox_key,
    message_to_incoming,
    to_incoming,
)
from handlers.types import Choice, FieldView, FormStep, FormView

TEAM = {"id": "T1"}
USER = {"id": "U1", "team_id": "T1"}


def test_fp_text_becomes_the_core_command() -> None:
    inc = command_to_incoming({"team_id": "T1", "user_id": "U1", "text": "requests approve 3"})

    assert (inc.platform, inc.user_id, inc.chat_id) == ("slack", "T1/U1", "U1")
    assert inc.text == "/requests approve 3" and inc.command == "requests"
    assert inc.private, "replies go to the person's DM"
    assert command_to_incoming({"team_id": "T1", "user_id": "U1", "text": " "}).text == "/help"
    assert command_to_incoming({"team_id": "T1", "user_id": "U1", "text": "/whoami"}).text == "/whoami"


def test_two_workspaces_never_share_an_account() -> None:
    a = command_to_incoming({"team_id": "T1", "user_id": "U1", "text": "help"})
    b = command_to_incoming({"team_id": "T2", "user_id": "U1", "text": "help"})

    assert a.user_id != b.user_id


def test_only_a_persons_own_dm_text_is_a_message() -> None:
    def body(**event: object) -> dict[str, object]:
        return {"type": "event_callback", "team_id": "T1", "event_id": "Ev1",
                "event": {"type": "message", "channel_type": "im", "user": "U1", **event}}

    inc = message_to_incoming(body(text="a &lt;b&gt; &amp; c"))
    assert inc is not None and inc.text == "a <b> & c", "Slack's escaping undone once"
    assert message_to_incoming(body(text="x", channel_type="channel")) is None
    assert message_to_incoming(body(text="x", bot_id="B1")) is None
    assert message_to_incoming(body(text="x", subtype="message_changed")) is None
    assert to_incoming({"type": "event_callback", "event": {"type": "app_home_opened"}}) is None

    shared = message_to_incoming(body(text="our NAP", subtype="file_share", files=[
        {"id": "F1", "name": "nap.pdf", "size": 2048, "mimetype": "application/pdf"}]))
    assert shared is not None and shared.text == "our NAP"
    assert [(a.file_id, a.name, a.size, a.mime_type) for a in shared.attachments] == [
        ("F1", "nap.pdf", 2048, "application/pdf")]


def test_buttons_become_commands_or_form_answers() -> None:
    def press(action_id: str, block_id: str, **action: object) -> dict[str, object]:
        return {"type": "block_actions", "team": TEAM, "user": USER,
                "actions": [{"action_id": action_id, "block_id": block_id, **action}]}

    cmd = action_to_incoming(press("cmd:0", "cmd:0", value="/requests approve 12"))
    assert cmd is not None and cmd.text == "/requests approve 12" and cmd.action is None

    answer = action_to_incoming(press("form:answer:1", "form:7:answers", value="CHL"))
    assert answer is not None
    assert (answer.action, answer.value, answer.form_version) == ("answer", "CHL", 7)

    picked = action_to_incoming(press("form:date", "form:3:answers", selected_date="2018-04-09"))
    assert picked is not None and picked.value == "2018-04-09"

    back = action_to_incoming(press("form:back", "form:4:controls", value="4"))
    assert back is not None and (back.action, back.form_version) == ("back", 4)
    assert action_to_incoming(press("other", "x")) is None


def test_a_submitted_modal_becomes_values_of_its_form() -> None:
    body = {"type": "view_submission", "team": TEAM, "user": USER, "view": {
        "callback_id": "form:membership", "private_metadata": json.dumps({"v": 3, "i": []}),
        "state": {"values": {
            "name": {"value": {"type": "plain_text_input", "value": "Ana"}},
            "member": {"value": {"type": "static_select", "selected_option": {"value": "CHL"}}},
            "when": {"value": {"type": "datepicker", "selected_date": "2018-04-09"}},
            "note": {"value": {"type": "plain_text_input", "value": None}},
        }}}}

    inc = to_incoming(body)

    assert inc is not None and inc.value == "membership" and inc.form_version == 3
    assert inc.values == {"name": "Ana", "member": "CHL", "when": "2018-04-09", "note": ""}
    closed = to_incoming({**body, "type": "view_closed"})
    assert closed is not None and closed.action == "cancel"
    assert to_incoming({**body, "view": {"callback_id": "someone-else"}}) is None


def test_inbox_keys() -> None:
    assert inbox_key({"type": "event_callback", "event_id": "Ev9"}, "{}") == "ev:Ev9"
    a, b = inbox_key({}, "command=%2Ffp&trigger_id=1"), inbox_key({}, "command=%2Ffp&trigger_id=2")
    assert a != b and a.startswith("rq:") and len(a) <= 100
    # Socket Mode gives no raw body: the payload itself is hashed.
    assert inbox_key({"x": 1, "y": 2}, "") == inbox_key({"y": 2, "x": 1}, "")


def test_long_text_is_cut_into_sections_without_breaking_an_escape() -> None:
    text = "line\n" * 700 + "&lt;" * 1000

    pieces = kit.split_text(text)

    assert all(len(p) <= kit.SECTION_MAX for p in pieces)
    assert all(p.count("&") == p.count(";") for p in pieces)
    assert "".join(p.replace("\n", "") for p in pieces) == text.replace("\n", "")


def test_many_buttons_are_split_into_actions_blocks_of_25() -> None:
    choices = [Choice(f"/requests approve {n}", f"Approve #{n}") for n in range(30)]

    [blocks] = kit.message_blocks("Pending", choices=choices)

    actions = [b for b in blocks if b["type"] == "actions"]
    assert [len(a["elements"]) for a in actions] == [25, 5]
    ids = [e["action_id"] for a in actions for e in a["elements"]]
    assert len(set(ids)) == 30


def field(name: str, kind: str, **kw: object) -> FieldView:
    values: dict[str, object] = {"label": name.title(), "required": True, "max_length": 200}
    values.update(kw)
    return FieldView(name=name, kind=kind, **values)  # type: ignore[arg-type]


def test_each_field_kind_gets_its_own_input() -> None:
    form = FormView("f", "A form whose title is far too long", "Send", version=2, fields=(
        field("member", "choice", choices=(Choice("CHL", "Chile"), Choice("DEU", "Germany")),
              value="DEU"),
        field("story", "multiline", max_length=1500, required=False, hint="A few lines"),
        field("when", "date", value="2018-04-09"),
        field("link", "url"),
        field("email", "email"),
        field("name", "text", max_length=120, value="Ana"),
    ))

    view = kit.modal(form, {"cancel": "Cancel"})

    inputs = {b["block_id"]: b for b in view["blocks"]}
    assert view["callback_id"] == "form:f" and len(view["title"]["text"]) <= 24
    assert view["notify_on_close"] is True
    select = inputs["member"]["element"]
    assert select["type"] == "static_select"
    assert [o["value"] for o in select["options"]] == ["CHL", "DEU"]
    assert select["initial_option"]["value"] == "DEU"
    story = inputs["story"]
    assert story["element"]["multiline"] and story["element"]["max_length"] == 1500
    assert story["optional"] is True and story["hint"]["text"] == "A few lines"
    assert inputs["when"]["element"] == {"type": "datepicker", "initial_date": "2018-04-09",
                                         "action_id": "value"}
    assert inputs["link"]["element"]["type"] == "url_text_input"
    assert inputs["email"]["element"]["type"] == "email_text_input"
    assert inputs["name"]["element"]["initial_value"] == "Ana"
    assert json.loads(view["private_metadata"]) == {"v": 2, "i": []}


def test_choices_whose_values_are_too_long_are_sent_by_number() -> None:
    long = Choice("x" * 200, "Long one")
    form = FormView("f", "F", "Send", version=1,
                    fields=(field("pick", "choice", choices=(Choice("a", "A"), long)),))

    view = kit.modal(form, {"cancel": "Cancel"})

    assert [o["value"] for o in view["blocks"][0]["element"]["options"]] == ["1", "2"]
    assert json.loads(view["private_metadata"])["i"] == ["pick"]


def test_a_form_step_in_a_dm_has_its_answers_and_controls() -> None:
    step = FormStep("f", "F", field("member", "choice", required=False,
                                    choices=(Choice("CHL", "Chile"),)),
                    index=2, total=3, can_go_back=True, version=5)
    labels = {"back": "Back", "skip": "Skip", "cancel": "Cancel", "choose": "Choose"}

    [blocks] = kit.message_blocks("Which member?", step=step, labels=labels)

    answers, controls = blocks[-2], blocks[-1]
    assert answers["block_id"] == "form:5:answers"
    assert answers["elements"][0]["value"] == "CHL"
    assert [e["action_id"] for e in controls["elements"]] == ["form:skip", "form:back", "form:cancel"]


def test_pressed_buttons_give_way_to_a_note() -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}},
              {"type": "actions", "elements": []}]

    kept = kit.without_controls(blocks, "chosen")

    assert [b["type"] for b in kept] == ["section", "context"]


def test_the_manifest_names_what_the_adapter_serves() -> None:
    from pathlib import Path

    from bot.adapters.slack import EVENTS_PATH, SLASH_COMMAND

    manifest = (Path(__file__).parent.parent / "slack-manifest.yml").read_text()

    assert f"command: {SLASH_COMMAND}\n" in manifest
    assert manifest.count(f"{EVENTS_PATH}\n") == 3, "slash command, events, interactivity"
    for needed in ("app_home_opened", "message.im", "home_tab_enabled: true", "chat:write",
                   "commands", "im:history", "im:write", "users:read", "files:write"):
        assert needed in manifest


def test_a_field_error_always_lands_on_a_block_of_the_modal() -> None:
    assert kit.field_errors({"email": "Bad"}, ["name", "email"]) == {"email": "Bad"}
    assert kit.field_errors({"email": "Bad", "gone": "Odd"}, ["name", "email"]) == {
        "email": "Bad", "name": "Odd"}
