"""The fake Slack Web API works with the real slack_sdk client and a real Bolt app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes import validate
from tests.fakes.slack_api import FakeSlackAPI, event_body, signed_headers, slash_command_body

pytestmark = pytest.mark.asyncio

SECRET = "test-signing-secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlackAPI]:
    """Run a fake Slack Web API for one test."""
    async with FakeSlackAPI() as server:
        yield server


def client_for(fake: FakeSlackAPI, **kwargs: Any) -> AsyncWebClient:
    """Return a real AsyncWebClient pointed at the fake."""
    return AsyncWebClient(token=fake.token, base_url=f"{fake.url}/api/", **kwargs)


async def test_post_message_is_recorded_with_params(fake: FakeSlackAPI) -> None:
    response = await client_for(fake).chat_postMessage(channel="C1", text="hello")

    assert response["ok"] and response["channel"] == "C1"
    assert response["ts"] == response["message"]["ts"]
    [call] = fake.calls_to("chat.postMessage")
    assert call.params == {"channel": "C1", "text": "hello"}
    assert call.status == 200
    second = await client_for(fake).chat_postMessage(channel="C1", text="again")
    assert float(second["ts"]) > float(response["ts"])


async def test_wrong_token_is_invalid_auth(fake: FakeSlackAPI) -> None:
    client = AsyncWebClient(token="xoxb-wrong", base_url=f"{fake.url}/api/")

    with pytest.raises(SlackApiError) as error:
        await client.auth_test()

    assert error.value.response["error"] == "invalid_auth"


async def test_files_upload_v2_stores_the_bytes(fake: FakeSlackAPI) -> None:
    response = await client_for(fake).files_upload_v2(
        channel="C9", content=b"a,b\n1,2\n", filename="x.csv", title="Report"
    )

    methods = [call.method for call in fake.calls]
    assert methods == ["files.getUploadURLExternal", "files.completeUploadExternal"]
    file_id = response["file"]["id"]
    assert fake.uploads[file_id] == {
        "filename": "x.csv",
        "title": "Report",
        "content": b"a,b\n1,2\n",
        "channel_id": "C9",
    }


async def test_users_and_conversations(fake: FakeSlackAPI) -> None:
    fake.add_user("U1", real_name="Ana Pérez", email="ana@example.org")
    client = client_for(fake)

    assert (await client.users_info(user="U1"))["user"]["tz"] == "America/Santiago"
    found = await client.users_lookupByEmail(email="ana@example.org")
    assert found["user"]["id"] == "U1"
    assert (await client.conversations_open(users="U1"))["channel"]["id"] == "DU1"
    with pytest.raises(SlackApiError) as error:
        await client.users_info(user="U2")
    assert error.value.response["error"] == "user_not_found"


async def test_views_echo_the_view_with_an_id(fake: FakeSlackAPI) -> None:
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Register"},
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Berlin, 9 April"}}]}

    opened = await client_for(fake).views_open(trigger_id="1.2.3", view=view)
    updated = await client_for(fake).views_update(view_id=opened["view"]["id"], view=view)

    assert opened["view"]["id"].startswith("V")
    assert opened["view"]["title"] == view["title"]
    assert updated["view"]["id"] == opened["view"]["id"]


async def test_rate_limit_without_retry_handler_raises(fake: FakeSlackAPI) -> None:
    fake.fail_next("chat.postMessage", 429, retry_after=1)

    with pytest.raises(SlackApiError) as error:
        await client_for(fake).chat_postMessage(channel="C1", text="hi")

    assert error.value.response.status_code == 429
    assert error.value.response.headers["Retry-After"] == "1"
    assert error.value.response["error"] == "ratelimited"


async def test_rate_limit_retry_handler_succeeds_on_second_try(fake: FakeSlackAPI) -> None:
    fake.fail_next("chat.postMessage", 429, retry_after=1)
    client = client_for(fake, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])

    response = await client.chat_postMessage(channel="C1", text="hi")

    assert response["ok"]
    assert [call.status for call in fake.calls_to("chat.postMessage")] == [429, 200]


async def test_server_error_is_fatal_error(fake: FakeSlackAPI) -> None:
    fake.fail_next("views.open", status=503)

    with pytest.raises(SlackApiError) as error:
        await client_for(fake).views_open(trigger_id="1.2.3", view={"type": "modal"})

    assert error.value.response.status_code == 503
    assert error.value.response["error"] == "fatal_error"


async def test_wait_for_times_out_listing_recorded_methods(fake: FakeSlackAPI) -> None:
    await client_for(fake).auth_test()

    with pytest.raises(TimeoutError, match=r"auth\.test"):
        await fake.wait_for("chat.postMessage", timeout=0.05)


def bolt_asgi_app(fake: FakeSlackAPI) -> Starlette:
    """Wire a real Bolt app with an /fp command and app_mention listener behind Starlette."""
    app = AsyncApp(signing_secret=SECRET, client=client_for(fake))

    @app.command("/fp")
    async def fp(ack: Any, command: dict[str, Any], client: AsyncWebClient) -> None:
        await ack("got it")
        await client.chat_postMessage(channel=command["channel_id"], text=command["text"])

    @app.event("app_mention")
    async def mention(event: dict[str, Any], say: Any) -> None:
        await say(f"hi <@{event['user']}>")

    handler = AsyncSlackRequestHandler(app)

    async def slack_events(request: Request) -> Response:
        return await handler.handle(request)

    return Starlette(routes=[Route("/slack/events", slack_events, methods=["POST"])])


async def post_to_bolt(fake: FakeSlackAPI, body: str, headers: dict[str, str]) -> httpx.Response:
    """POST one request to the Bolt app through an in-process ASGI transport."""
    transport = httpx.ASGITransport(app=bolt_asgi_app(fake))
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as http:
        return await http.post("/slack/events", content=body, headers=headers)


async def test_bolt_answers_a_signed_slash_command(fake: FakeSlackAPI) -> None:
    body = slash_command_body(command="/fp", text="help", channel_id="D1")

    response = await post_to_bolt(fake, body, signed_headers(SECRET, body))

    assert response.status_code == 200
    assert response.text == "got it"
    [call] = await fake.wait_for("chat.postMessage")
    assert call.params == {"channel": "D1", "text": "help", "team_id": "T1"}


async def test_bolt_rejects_a_wrongly_signed_slash_command(fake: FakeSlackAPI) -> None:
    body = slash_command_body()

    response = await post_to_bolt(fake, body, signed_headers("wrong-secret", body))

    assert response.status_code == 401
    assert fake.calls == []


async def test_bolt_handles_a_signed_event(fake: FakeSlackAPI) -> None:
    body = event_body(
        {
            "type": "app_mention",
            "user": "U1",
            "channel": "C1",
            "text": "<@UBOT>",
            "ts": "1700000000.000001",
        }
    )

    headers = signed_headers(SECRET, body, content_type="application/json")
    response = await post_to_bolt(fake, body, headers)

    assert response.status_code == 200
    [call] = await fake.wait_for("chat.postMessage")
    assert call.params["text"] == "hi <@U1>"


# -- Slack's own checks: slack_sdk's Block Kit models and the server's limits ------------------
def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


@pytest.mark.parametrize(("blocks", "where"), [
    ([section("x" * 3001)], "text attribute cannot exceed 3000 characters"),
    ([section("Berlin")] * 51, "must be less than 51 items"),
    ([{"type": "actions", "elements": [{"type": "button", "action_id": "a", "value": "1",
                                        "text": {"type": "plain_text", "text": "y" * 76}}]}],
     "text attribute cannot exceed 75 characters"),
    ([section("")], "failed to match all allowed schemas [json-pointer:/blocks/0/text/text]"),
    ([{**section("Berlin"), "colour": "red"}], "[json-pointer:/blocks/0/colour]"),
    ([{"type": "poster", "text": "Berlin"}], "unsupported type 'poster'"),
])
async def test_blocks_slack_would_refuse_are_invalid_blocks(
        fake: FakeSlackAPI, blocks: list[dict[str, Any]], where: str) -> None:
    with pytest.raises(SlackApiError) as error:
        await client_for(fake).chat_postMessage(channel="C1", text="Berlin", blocks=blocks)
    assert error.value.response["error"] == "invalid_blocks"
    assert where in " ".join(error.value.response["errors"])
    [refusal] = validate.take_refusals()
    assert refusal.method == "chat.postMessage" and where in refusal.error


async def test_views_slack_would_refuse_are_invalid_arguments(fake: FakeSlackAPI) -> None:
    title = {"type": "plain_text", "text": "Membership request, Peru"}  # 24 characters
    await client_for(fake).views_open(trigger_id="1.2.3", view={
        "type": "modal", "title": title, "blocks": [section("Berlin")]})
    title = {**title, "text": "Membership request, Chile"}  # 25
    view = {"type": "modal", "title": title, "blocks": [section("Berlin")]}
    with pytest.raises(SlackApiError) as error:
        await client_for(fake).views_open(trigger_id="1.2.3", view=view)
    assert error.value.response["error"] == "invalid_arguments"
    assert "title must be between 1 and 24 characters" in str(error.value.response)
    with pytest.raises(SlackApiError):
        await client_for(fake).views_publish(user_id="U1", view={
            "type": "home", "blocks": [section("Berlin")] * 101})
    assert len(validate.take_refusals()) == 2
    await client_for(fake).chat_postMessage(channel="C1", text="Berlin", blocks=[section("ok")])
    with pytest.raises(SlackApiError, match="no_text"):
        await client_for(fake).api_call("chat.postMessage", json={"channel": "C1"})
    assert [r.error for r in validate.take_refusals()] == ["no_text"]


async def test_a_conversation_reads_back_newest_first_with_metadata_when_asked(
        fake: FakeSlackAPI) -> None:
    client = client_for(fake)
    for n in range(5):
        await client.chat_postMessage(channel="U9", text=f"message {n}", metadata={
            "event_type": "fpbot_outbox_message", "event_payload": {"row": n, "part": 0}})
    fake.post_by_user("U9", "U9", "a reply")
    opened = await client.conversations_open(users="U9")
    channel = opened["channel"]["id"]

    first = await client.conversations_history(channel=channel, limit=4,
                                               include_all_metadata=True)
    assert [m["text"] for m in first["messages"]] == [
        "a reply", "message 4", "message 3", "message 2"]
    assert first["messages"][1]["metadata"]["event_payload"] == {"row": 4, "part": 0}
    rest = await client.conversations_history(
        channel=channel, limit=4, cursor=first["response_metadata"]["next_cursor"])
    assert [m["text"] for m in rest["messages"]] == ["message 1", "message 0"]
    assert not rest["has_more"]
    assert rest["messages"][0]["metadata"] == {"event_type": "fpbot_outbox_message"}
    assert [m["text"] for m in fake.messages_to("U9")] == [f"message {n}" for n in range(5)]


@pytest.mark.parametrize(("metadata", "error"), [
    ({"event_type": "has space", "event_payload": {}}, "invalid_metadata_schema"),
    ({"event_type": "ok", "event_payload": {"row": [1, 2]}}, "invalid_metadata_schema"),
    ({"event_type": "ok", "payload": {}}, "invalid_metadata_format"),
])
async def test_metadata_slack_would_refuse_is_refused(
        fake: FakeSlackAPI, metadata: dict[str, Any], error: str) -> None:
    with pytest.raises(SlackApiError) as refused:
        await client_for(fake).chat_postMessage(channel="C1", text="hi", metadata=metadata)
    assert refused.value.response["error"] == error
    validate.take_refusals()  # seen here on purpose
