"""Defects an outside-in probe found, each through the chat as a person reads it."""

from __future__ import annotations

from sqlalchemy import select

from handlers.clock import FrozenClock
from storage.db import Database
from storage.edition_demo import load_demo_edition
from storage.models import NationalUpdate
from tests.conftest import COORDINATOR, FP_CHILE, FP_GERMANY, Transcript
from tests.test_updates import file_update

FORMATS = ("plain", "html", "mrkdwn")


async def _to_links_step(chat: Transcript) -> None:
    await chat.say("/update", as_=FP_CHILE)
    for answer in ("event", "Regional meeting on NAPs", "Slovenia hosts a regional meeting."):
        await chat.say(answer, as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "links"


async def test_links_must_be_https_and_the_question_says_how_to_give_several(
        chat: Transcript) -> None:
    await _to_links_step(chat)
    asked = chat.text()
    assert "one per line" not in asked
    assert "separate several with spaces or new lines" in asked
    await chat.say("http://www.gov.si/wps", as_=FP_CHILE)
    for fmt in FORMATS:
        assert "“http://www.gov.si/wps” starts with http://; please give its https:// address" \
            in chat.text(fmt=fmt)
    await chat.say("https://www.gov.si/wps not a link", as_=FP_CHILE)
    assert "“not a link” is not a web address starting with https://" in chat.text()
    await chat.say("https://www.gov.si/wps https://www.un.org/wps", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "files"


async def test_a_meeting_link_must_be_https_too(chat: Transcript) -> None:
    from handlers import forms
    from handlers.types import UserError

    for given, key in (("http://meet.example.org/x", "forms.http_url"),
                       ("meet.example.org", "forms.bad_url")):
        try:
            forms.check_url(given)
        except UserError as err:
            assert err.key == key and err.context["address"] == given
        else:
            raise AssertionError(given)
    assert forms.check_url("https://meet.example.org/x") == "https://meet.example.org/x"


async def test_an_optional_answer_is_cleared_with_none_when_editing(
        chat: Transcript, demo_db: Database) -> None:
    update_id = await file_update(chat)  # filed with one link
    await chat.say(f"/edit {update_id}", as_=FP_CHILE)
    for _ in range(3):  # category, title, text kept
        await chat.say("-", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "links"
    for fmt in FORMATS:
        assert "send - to keep it, or none to clear it" in chat.text(fmt=fmt)
    await chat.say("none", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "files"
    await chat.say("-", as_=FP_CHILE)
    await chat.say("-", as_=FP_CHILE)
    assert chat.keys == ["updates.edited"], chat.keys
    async with demo_db.transaction() as session:
        row = await session.get(NationalUpdate, update_id)
        assert row is not None and row.links == []


async def test_a_required_answer_is_not_cleared_by_none(chat: Transcript) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/edit {update_id}", as_=FP_CHILE)
    await chat.say("-", as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "title"
    assert "none to clear it" not in chat.text()
    await chat.say("none", as_=FP_CHILE)  # a title of one word, taken as typed
    assert chat.last().step is not None and chat.last().step.field.name == "text"


async def test_a_slack_modal_clears_an_optional_answer_by_emptying_it(
        chat: Transcript, demo_db: Database) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/edit {update_id}", as_=FP_CHILE)
    whole = chat.last().form
    assert whole is not None
    values = {f.name: f.value for f in whole.fields}
    values["links"] = ""
    await chat.say(as_=FP_CHILE, value="update", values=values)
    assert chat.keys == ["updates.edited"], chat.keys
    async with demo_db.transaction() as session:
        links = await session.scalar(select(NationalUpdate.links)
                                     .where(NationalUpdate.id == update_id))
        assert links == []


TG_STRANGER = "7301"


async def _request(chat: Transcript, member: str, user: str = TG_STRANGER) -> int:
    await chat.say("/start", as_=user, platform="telegram")
    for answer in (member, "Ana Pérez", "Director of Human Rights", "Ministry of Foreign Affairs",
                   "ana.perez@minrel.example.org"):
        await chat.say(answer, as_=user, platform="telegram")
    assert chat.keys == ["onboarding.request_received"], chat.keys
    return int(chat.last().context["id"])


async def test_a_request_for_a_member_with_a_focal_point_says_who_serves_it(
        chat: Transcript) -> None:
    from tests.message_coverage import render_everywhere

    request_id = await _request(chat, "Chile")
    serving = "focal point Catalina Rojas (demo) and alternate Tomás Fuentes (demo)"
    (notice,) = [n for n in chat.notices if n.key == "onboarding.request_for_secretariat"][:1]
    shown = render_everywhere(chat.renderer, notice, "en")
    assert f"Chile already has {serving}: approving adds another focal point" in shown["plain"]
    await chat.say("/requests", as_=COORDINATOR)
    for fmt in FORMATS:
        assert f"Chile already has {serving}" in chat.text(fmt=fmt)
    await chat.say(f"/requests approve {request_id}", as_=COORDINATOR)
    assert chat.keys == ["onboarding.approved_done"]
    assert f"Chile also has {serving}; if one of them has left" in chat.text()


async def test_a_request_for_a_member_nobody_serves_says_nothing_of_it(chat: Transcript) -> None:
    await _request(chat, "Uruguay")
    await chat.say("/requests", as_=COORDINATOR)
    assert "Uruguay · Ana Pérez" in chat.text()
    assert "already has" not in chat.text()


async def test_a_mistyped_member_is_suggested_before_it_becomes_a_new_member(
        chat: Transcript) -> None:
    await chat.say("/start", as_=TG_STRANGER, platform="telegram")
    await chat.say("Chlie", as_=TG_STRANGER, platform="telegram")
    assert chat.last().step is not None and chat.last().step.field.name == "meant"
    for fmt in FORMATS:
        assert "Did you mean Chile?" in chat.text(fmt=fmt)
    assert [c.label for c in chat.last().choices] == ["Chile", "No, “Chlie” is new"]
    await chat.say("Chile", as_=TG_STRANGER, platform="telegram")
    assert chat.last().step is not None and chat.last().step.field.name == "name"
    for answer in ("Ana Pérez", "Director", "Ministry of Foreign Affairs", "ana@minrel.example.org"):
        await chat.say(answer, as_=TG_STRANGER, platform="telegram")
    assert chat.keys == ["onboarding.request_received"]
    assert "focal point of Chile" in chat.text() and "new member" not in chat.text()


async def test_a_new_member_close_to_a_known_name_is_still_new_when_said_so(
        chat: Transcript) -> None:
    await chat.say("/start", as_=TG_STRANGER, platform="telegram")
    await chat.say("Chlie", as_=TG_STRANGER, platform="telegram")
    await chat.say(chat.last().choices[1].value, as_=TG_STRANGER, platform="telegram")
    assert chat.last().step is not None and chat.last().step.field.name == "region"
    assert "“Chlie” is not a member of the Network yet" in chat.text()


async def test_a_modal_asks_about_a_mistyped_member_unless_a_region_is_given(
        chat: Transcript) -> None:
    await chat.say("/start", as_=TG_STRANGER, platform="telegram")
    whole = chat.replies[-1].form
    assert whole is not None and "meant" not in [f.name for f in whole.fields]
    values = {"member": "Chlie", "region": "", "name": "Ana Pérez", "title": "Director",
              "ministry": "Ministry of Foreign Affairs", "email": "ana@minrel.example.org"}
    await chat.say(as_=TG_STRANGER, platform="telegram", value="membership", values=values)
    assert chat.keys == ["forms.invalid"]
    assert chat.last().errors["member"].startswith("Did you mean Chile?")
    await chat.say(as_=TG_STRANGER, platform="telegram", value="membership",
                   values={**values, "region": "latin_american_caribbean"})
    assert chat.keys == ["onboarding.request_received"]
    assert "Chlie, a new member of the Network" in chat.text()


async def test_a_missing_update_number_is_shown_with_the_command_used(chat: Transcript) -> None:
    for said, example in (("/withdraw abc", "/withdraw 12"), ("/withdraw", "/withdraw 12"),
                          ("/myupdates abc", "/myupdates 12"), ("/edit x", "/edit 12")):
        await chat.say(said, as_=FP_CHILE)
        assert chat.keys == ["updates.which_update"], said
        for fmt in FORMATS:
            assert f"for example: {example}" in chat.text(fmt=fmt), (said, chat.text(fmt=fmt))
        assert ("(see /myupdates)" in chat.text()) == (example != "/myupdates 12")


async def test_review_of_an_update_sent_back_says_changes_were_asked(chat: Transcript) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/review changes {update_id} Please add the date.", as_=COORDINATOR)
    assert chat.keys == ["review.done_changes_requested"]
    await chat.say(f"/review {update_id}", as_=COORDINATOR)
    assert chat.keys == ["review.no_longer_waiting"]
    assert "is no longer waiting for review: changes were asked of its author." in chat.text()
    await chat.say(f"/review approve {update_id}", as_=COORDINATOR)
    assert chat.keys == ["review.not_in_review"]
    assert "not waiting for review any more: changes were asked of its author (decided by" \
        in chat.text()
    assert "it is changes requested" not in chat.text()


async def test_a_wrong_link_code_points_to_the_other_account_not_the_secretariat(
        chat: Transcript) -> None:
    await chat.say("/link 123456", as_=FP_CHILE)
    assert chat.keys == ["onboarding.link_code_unknown"]
    for fmt in FORMATS:
        text = chat.text(fmt=fmt)
        assert "A link code comes from your own other account: send /link there" in text
        assert "secretariat" not in text and "within 30 minutes" in text


async def test_whoami_after_a_membership_request_says_it_is_waiting(chat: Transcript) -> None:
    request_id = await _request(chat, "Uruguay")
    await chat.say("/whoami", as_=TG_STRANGER, platform="telegram")
    assert chat.keys == ["errors.not_registered"]
    for fmt in FORMATS:
        text = chat.text(fmt=fmt)
        assert f"Your membership request #{request_id} for Uruguay is waiting" in text
        assert "I'll pass a membership request" not in text
    await chat.say("/whoami", as_="7302", platform="telegram")  # no request: the way in
    assert "send /start and I'll pass a membership request" in chat.text()


async def test_help_shows_each_person_only_what_they_may_use(chat: Transcript) -> None:
    await chat.say("/help", as_=FP_CHILE)
    for fmt in FORMATS:
        text = chat.text(fmt=fmt)
        assert "/meeting n · " in text and "new | edit n | cancel n" not in text
        assert "/start" not in text
    await chat.say("/help", as_=COORDINATOR)
    assert "/meeting n | new | edit n | cancel n · " in chat.text() and "/start" not in chat.text()
    await chat.say("/help", as_="7303", platform="telegram")
    assert "/start [code] · join the bot" in chat.text()
    menu = dict(await chat.core.commands_for("console", FP_CHILE))
    assert "start" not in menu and "meeting" in menu and "review" not in menu
    assert "start" in dict(await chat.core.commands_for("telegram", "7303"))


async def test_review_names_each_section_as_the_newsletter_heads_it(chat: Transcript) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/review sections {update_id}", as_=COORDINATOR)
    labels = [c.label for c in chat.last().choices]
    assert sorted(labels) == sorted([
        "From the Network", "Focal point spotlight", "Member action and policy",
        "Innovation in policy and practice", "Best practices and lessons learned",
        "National action plan progress", "Knowledge products",
        "Funding and capacity-building opportunities", "Civil society voices", "Upcoming events"])
    await chat.say(f"/review approve {update_id}", as_=COORDINATOR)
    for fmt in FORMATS:
        assert "for National action plan progress" in chat.text(fmt=fmt)


async def _approved_german_plan(chat: Transcript) -> int:
    update_id = await file_update(
        chat, FP_GERMANY, title="Germany adopts its third plan", category="policy",
        text="The federal cabinet adopted the third national action plan on women, peace "
             "and security, with civil society organisations consulted throughout.")
    await chat.say(f"/review approve {update_id}", as_=COORDINATOR)
    assert chat.keys == ["review.done_approved"]
    return update_id


async def test_search_spells_out_the_acronyms_of_the_field(chat: Transcript) -> None:
    await _approved_german_plan(chat)
    for query in ("NAP", "nap Germany", "WPS", "CSO cabinet"):
        await chat.say(f"/search {query}", as_=FP_CHILE)
        for fmt in FORMATS:
            assert "Germany adopts its third plan" in chat.text(fmt=fmt), query
    await chat.say("/search NAP indicators", as_=FP_CHILE)  # every word must still match
    assert "No approved update matches “nap indicators”" in chat.text()


async def test_a_search_by_filter_alone_lists_what_matches(chat: Transcript) -> None:
    await _approved_german_plan(chat)
    await chat.say("/search category:policy", as_=FP_CHILE)
    assert chat.keys == ["search.results"]
    for fmt in FORMATS:
        assert "1 update for “category:policy”" in chat.text(fmt=fmt)
        assert "Germany adopts its third plan" in chat.text(fmt=fmt)
    await chat.say("/search category:event", as_=FP_CHILE)
    assert "No approved update matches “category:event”" in chat.text()
    await chat.say("/search", as_=FP_CHILE)
    assert chat.keys == ["search.need_words"]


async def test_review_says_an_update_was_approved_or_published(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    update_id = await _approved_german_plan(chat)
    await chat.say(f"/review {update_id}", as_=COORDINATOR)
    assert "is no longer waiting for review: it was approved." in chat.text()
    async with demo_db.transaction() as session:
        assert await load_demo_edition(session, clock.now()) is not None
        item = await session.scalar(select(NationalUpdate.id).where(
            NationalUpdate.title.startswith("Progress indicators")))
    await chat.say("/edition 1 publish", as_=COORDINATOR)
    await chat.say(f"/review approve {item}", as_=COORDINATOR)
    assert chat.keys == ["review.not_in_review"]
    for fmt in FORMATS:
        assert "is not waiting for review any more: it was published" in chat.text(fmt=fmt)
