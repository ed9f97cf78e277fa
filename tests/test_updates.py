"""National updates: filing, editing, review, and the observatory search."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from handlers.dispatch import Core
from handlers.types import Attachment
from storage.db import Database
from storage.models import NationalUpdate, OutboxItem, UpdateRevision
from tests.conftest import COORDINATOR, FP_CHILE, FP_GERMANY, Transcript

WILPF = "wilpf@demo.invalid"
CHILE_NAP = ("Chile includes progress indicators in its second NAP",
             "For the first time, the second national action plan of Chile sets progress "
             "indicators for each of its objectives, agreed with civil society.")


async def file_update(chat: Transcript, who: str = FP_CHILE, *, title: str = CHILE_NAP[0],
                      text: str = CHILE_NAP[1], visibility: str = "public",
                      category: str = "nap_progress") -> int:
    await chat.say("/update", as_=who)
    for answer in (category, title, text, "https://www.minrel.gob.cl/nap", "-", visibility):
        await chat.say(answer, as_=who)
    assert chat.keys == ["updates.filed"], chat.keys
    return int(chat.last().context["id"])


async def withdraw(chat: Transcript, update_id: int, who: str = FP_CHILE) -> None:
    """Ask to withdraw an update and confirm with the Withdraw button."""
    await chat.say(f"/withdraw {update_id}", as_=who)
    assert chat.keys == ["updates.confirm_withdraw"], chat.keys
    await chat.say(chat.last().choices[0].value, as_=who)
    assert chat.keys == ["updates.withdrawn"], chat.keys


async def outbox_keys(db: Database) -> list[str]:
    async with db.transaction() as session:
        return [i.message["key"] for i in await session.scalars(select(OutboxItem).order_by(OutboxItem.id))]


async def test_a_focal_point_files_an_update_in_a_few_steps(chat: Transcript, demo_db: Database) -> None:
    await chat.say("/update", as_=FP_CHILE)
    step = chat.last().step
    assert step is not None and step.field.name == "category" and step.total == 6
    assert len(chat.last().choices) == 7
    update_id = await file_update(chat)
    assert "with the secretariat for review" in chat.text()
    async with demo_db.transaction() as session:
        row = await session.get(NationalUpdate, update_id)
        assert row is not None
        assert (row.member.name, row.status, row.visibility) == ("Chile", "submitted", "public")
        assert row.links == ["https://www.minrel.gob.cl/nap"]
    assert await outbox_keys(demo_db) == ["updates.for_review"]


async def test_a_nap_progress_update_offers_to_update_the_nap_status(chat: Transcript) -> None:
    await file_update(chat)
    assert chat.last().choices[0].value == "/nap update chile"
    await chat.say(chat.last().choices[0].value, as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.form == "nap"


async def test_free_text_is_offered_as_an_update(chat: Transcript, demo_db: Database) -> None:
    await chat.say("Brazil launched the development of its first NAP on 8 March 2017.",
                   as_=FP_CHILE)
    assert chat.keys == ["forms.question"]  # the offer and its Cancel in one message
    assert chat.text().startswith("File this as an update for Chile?")
    assert chat.last().step is not None and chat.last().step.field.name == "category"
    for answer in ("1", "Brazil starts its first NAP", "-", "-", "network"):
        await chat.say(answer, as_=FP_CHILE)
    assert chat.keys == ["updates.filed"]
    async with demo_db.transaction() as session:
        row = await session.get(NationalUpdate, chat.last().context["id"])
        assert row is not None and row.body.startswith("Brazil launched")


async def test_an_offer_can_be_declined(chat: Transcript, demo_db: Database) -> None:
    await chat.say("Just a note to self", as_=FP_CHILE)
    await chat.say(as_=FP_CHILE, action="cancel")
    assert chat.keys == ["forms.cancelled"]
    async with demo_db.transaction() as session:
        assert list(await session.scalars(select(NationalUpdate))) == []


async def test_bad_titles_texts_links_and_files_are_re_asked(chat: Transcript) -> None:
    await chat.say("/update", as_=FP_CHILE)
    await chat.say("event", as_=FP_CHILE)
    await chat.say("", as_=FP_CHILE)
    assert chat.last().errors == {"title": "This is required."}
    await chat.say("T" * 151, as_=FP_CHILE)
    assert chat.last().errors == {"title": "That is 151 characters; the limit is 150."}
    await chat.say("Regional meeting on NAPs of Western Balkan countries", as_=FP_CHILE)
    await chat.say("x" * 3001, as_=FP_CHILE)  # the message limit is the update's limit
    assert chat.keys == ["errors.too_long"]
    assert "3001 characters; I can take at most 3000" in chat.text()
    await chat.say("Slovenia hosts a regional meeting in February 2018.", as_=FP_CHILE)
    await chat.say("www.example.org", as_=FP_CHILE)
    assert chat.last().errors["links"].startswith("“www.example.org” is not a web address")
    await chat.say("https://www.gov.si/wps", as_=FP_CHILE)
    virus = Attachment(file_id="f1", name="setup.exe", size=1000,
                       mime_type="application/x-msdownload")
    await chat.say("", as_=FP_CHILE, attachments=(virus,))
    assert "setup.exe is a kind of file I don't keep" in chat.last().errors["files"]
    huge = Attachment(file_id="f2", name="report.pdf", size=30 * 2**20, mime_type="application/pdf")
    await chat.say("", as_=FP_CHILE, attachments=(huge,))
    assert "larger than 20 MB" in chat.last().errors["files"]
    good = Attachment(file_id="f3", name="agenda.pdf", size=120_000, mime_type="application/pdf")
    await chat.say("", as_=FP_CHILE, attachments=(good,))
    assert chat.last().step is not None and chat.last().step.field.value == "agenda.pdf"
    await chat.say("-", as_=FP_CHILE)
    await chat.say("public", as_=FP_CHILE)
    assert chat.keys == ["updates.filed"] and chat.last().context["files"] == ["agenda.pdf"]


async def test_edit_keeps_history_and_returns_to_review(chat: Transcript, demo_db: Database) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/edit {update_id}", as_=FP_CHILE)
    assert chat.keys == ["updates.editing", "forms.question"]
    for answer in ("-", "Chile: progress indicators in the second NAP", "-", "-", "-", "-"):
        await chat.say(answer, as_=FP_CHILE)
    assert chat.keys == ["updates.edited"] and chat.last().context["version"] == 2
    async with demo_db.transaction() as session:
        titles = list(await session.scalars(select(UpdateRevision.title)
                                            .order_by(UpdateRevision.version)))
    assert titles == [CHILE_NAP[0], "Chile: progress indicators in the second NAP"]
    await chat.say(f"/myupdates {update_id}", as_=FP_CHILE)
    assert [h["version"] for h in chat.last().context["history"]] == [1, 2]


async def test_nobody_edits_someone_elses_update(chat: Transcript) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/edit {update_id}", as_=FP_GERMANY)
    assert chat.keys == ["updates.not_yours"]
    await chat.say(f"/withdraw {update_id}", as_="alt.chile@demo.invalid")
    assert chat.keys == ["updates.not_yours"]
    await chat.say("/edit twelve", as_=FP_CHILE)
    assert chat.keys == ["updates.which_update"]


async def test_a_focal_point_cannot_file_for_another_member(chat: Transcript) -> None:
    await chat.say("/update Germany", as_=FP_CHILE)
    assert chat.keys == ["updates.not_your_member"]
    await chat.say("/update Germany", as_=COORDINATOR)  # the secretariat files on one's behalf
    assert chat.last().step is not None and chat.last().step.field.name == "category"


async def test_only_the_secretariat_reviews(chat: Transcript) -> None:
    await chat.say("/review", as_=FP_CHILE)
    assert chat.keys == ["errors.secretariat_only"]


async def test_review_request_changes_revise_then_approve(chat: Transcript, demo_db: Database) -> None:
    update_id = await file_update(chat)
    await chat.say("/review", as_=COORDINATOR)
    assert chat.keys == ["review.item"] and chat.last().context["id"] == update_id
    old_approve = [c.value for c in chat.last().choices][0]
    assert old_approve == f"/review approve {update_id}v1 nap_progress"
    await chat.say(f"/review changes {update_id}", as_=COORDINATOR)
    assert chat.last().step is not None and chat.last().step.field.name == "note"
    await chat.say("Please name the year the second NAP was adopted.", as_=COORDINATOR)
    assert chat.keys == ["review.done_changes_requested"]
    await chat.say("/review", as_=COORDINATOR)
    assert chat.keys == ["review.queue_empty"]

    await chat.say("/myupdates", as_=FP_CHILE)
    assert "Secretariat: Please name the year" in chat.text()
    await chat.say(f"/edit {update_id}", as_=FP_CHILE)
    for answer in ("-", "-", CHILE_NAP[1] + " The plan was adopted in 2015.", "-", "-", "-"):
        await chat.say(answer, as_=FP_CHILE)
    await chat.say(old_approve, as_=COORDINATOR)  # a button of the version reviewed before
    assert chat.keys == ["review.revised_meanwhile", "review.item"]
    await chat.say("/review", as_=COORDINATOR)
    assert chat.last().context["version"] == 2
    await chat.say(f"/review approve {update_id}", as_=COORDINATOR)
    assert chat.keys == ["review.done_approved"]
    assert "National action plan progress" in chat.text()
    assert await outbox_keys(demo_db) == ["updates.for_review", "review.told_changes_requested",
                                          "updates.revised_for_review", "review.told_approved"]


async def test_reject_with_a_reason(chat: Transcript, demo_db: Database) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/review reject {update_id} Duplicate of #1", as_=COORDINATOR)
    assert chat.keys == ["review.done_rejected"]
    await chat.say(f"/edit {update_id}", as_=FP_CHILE)
    assert chat.keys == ["updates.not_editable"]
    async with demo_db.transaction() as session:
        told = await session.scalar(select(OutboxItem).order_by(OutboxItem.id.desc()))
    assert told is not None and told.message["context"]["note"] == "Duplicate of #1"


async def test_an_update_withdrawn_cannot_be_approved(chat: Transcript) -> None:
    update_id = await file_update(chat)
    await withdraw(chat, update_id)
    await chat.say(f"/review approve {update_id}", as_=COORDINATOR)
    assert chat.keys == ["review.not_in_review"]
    assert "its author withdrew it" in chat.text()


async def test_an_update_already_rejected_cannot_be_approved(chat: Transcript) -> None:
    """(Whichever of two reviewers at once wins, below, the other hears why: here, for sure,
    the one who comes after a rejection.)"""
    update_id = await file_update(chat)
    await chat.say(f"/review reject {update_id} Not WPS", as_=COORDINATOR)
    await chat.say(f"/review approve {update_id}", as_=COORDINATOR)
    assert chat.keys == ["review.not_in_review"]
    assert "it was not accepted" in chat.text()


async def test_two_reviewers_at_once_one_wins(chat: Transcript, core: Core) -> None:
    update_id = await file_update(chat)
    await core.console_identity(COORDINATOR)
    await chat.say("/link", as_=COORDINATOR)  # a second secretariat account, on Slack
    await chat.say(f"/start {chat.last().context['one_time_code']}", as_="T1/U9", platform="slack")
    one = Transcript(core, chat.renderer)
    two = Transcript(core, chat.renderer)
    await asyncio.gather(
        one.say(f"/review approve {update_id}", as_=COORDINATOR),
        two.say(f"/review reject {update_id} Not WPS", as_="T1/U9", platform="slack"),
    )
    assert sorted(one.keys + two.keys) in (["review.done_approved", "review.not_in_review"],
                                           ["review.done_rejected", "review.not_in_review"])


async def approved(chat: Transcript, who: str, title: str, text: str, visibility: str,
                   category: str = "nap_progress") -> int:
    update_id = await file_update(chat, who, title=title, text=text, visibility=visibility,
                                  category=category)
    await chat.say(f"/review approve {update_id}", as_=COORDINATOR)
    return update_id


async def test_search_finds_approved_updates_and_never_attributes_chatham(chat: Transcript) -> None:
    await approved(chat, FP_CHILE, *CHILE_NAP, "public")
    await approved(chat, FP_CHILE, "Lessons from consultations with women mediators",
                   "Indicators for mediation were discussed in confidence.", "chatham",
                   "best_practice")
    await file_update(chat, FP_GERMANY, title="Berlin meeting", text="Indicators pending",
                      visibility="public")  # not yet approved: not found

    await chat.say("/search indicators", as_=FP_GERMANY)
    hits = chat.last().context["hits"]
    assert {h["title"] for h in hits} == {CHILE_NAP[0],
                                          "Lessons from consultations with women mediators"}
    chatham = next(h for h in hits if h["chatham"])
    assert chatham["member"] == ""
    assert "Chile" not in chat.text().split(chatham["title"])[1].split("\n")[1]
    await chat.say("/search indicators member:Chile", as_=FP_GERMANY)
    assert [h["title"] for h in chat.last().context["hits"]] == [CHILE_NAP[0]]
    await chat.say("/search indicator category:nap_progress since:2018-01-01", as_=FP_GERMANY)
    assert [h["title"] for h in chat.last().context["hits"]] == [CHILE_NAP[0]]


async def test_network_only_updates_stay_in_the_network(chat: Transcript) -> None:
    await approved(chat, FP_CHILE, "Defence directive on resolution 1325",
                   "Armed forces integrate resolution 1325 into planning.", "network")
    await chat.say("/search resolution 1325", as_=FP_GERMANY)
    assert len(chat.last().context["hits"]) == 1
    await chat.say("/search resolution 1325", as_=WILPF)
    assert chat.last().context["hits"] == []


async def test_search_with_stop_words_or_odd_characters_does_not_break(chat: Transcript) -> None:
    await approved(chat, FP_CHILE, *CHILE_NAP, "public")
    await chat.say("/search the and of", as_=FP_GERMANY)
    assert chat.keys == ["search.need_words"]
    await chat.say('/search "NEAR( ^* OR -- \'; DROP TABLE', as_=FP_GERMANY)
    assert chat.keys == ["search.results"] and chat.last().context["hits"] == []
    await chat.say("/search indicators since:yesterday", as_=FP_GERMANY)
    assert chat.keys == ["search.bad_since"]
    await chat.say("/search", as_=FP_GERMANY)
    assert chat.keys == ["search.need_words"]


async def test_the_dashboard_shows_submissions_and_the_review_queue(chat: Transcript,
                                                                     core: Core) -> None:
    update_id = await file_update(chat)
    await core.console_identity(COORDINATOR)
    mine = await core.home("console", FP_CHILE)
    assert mine.context["updates"] == [{"id": update_id, "title": CHILE_NAP[0], "member": "Chile",
                                        "status": "waiting for review"}]
    theirs = await core.home("console", COORDINATOR)
    assert theirs.context["to_review"] == 1
    text = chat.renderer.render(theirs.key, "en", "plain", **theirs.context)
    assert "1 update to review (/review)" in text


async def test_a_link_cannot_disguise_itself_in_slack(chat: Transcript) -> None:
    await chat.say("/update", as_=FP_CHILE)
    for answer in ("event", "Title", "Text"):
        await chat.say(answer, as_=FP_CHILE)
    await chat.say("https://evil.example/x|https://un.org/report", as_=FP_CHILE)
    assert "is not a web address" in chat.last().errors["links"]
    mrkdwn = chat.renderer.render("updates.detail", "en", "mrkdwn", id=1, title="t", member="m",
                                  category="c", visibility="v", status="s", section="",
                                  body="b", links=["https://a.example/x|y"], files=[], note="",
                                  history=[])
    assert "<https://a.example/x%7Cy|https://a.example/x¦y>" in mrkdwn


async def test_search_results_are_never_posted_in_a_group(chat: Transcript) -> None:
    await chat.say("/search indicators", as_=FP_CHILE, private=False)
    assert chat.last().private


async def test_a_refused_submit_closes_the_form_and_undoes_its_writes(
    chat: Transcript, demo_db: Database
) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/review changes {update_id}", as_=COORDINATOR)  # the note form opens
    await withdraw(chat, update_id)  # meanwhile the author withdraws
    await chat.say("Please add the year", as_=COORDINATOR)
    assert chat.keys == ["review.not_in_review"] and chat.last().closes_form
    await chat.say("Some notes for the next call with Chile",  # the note form is gone,
                   as_=COORDINATOR)  # and text is not eaten
    assert chat.keys == ["errors.free_text"]
    async with demo_db.transaction() as session:
        row = await session.get(NationalUpdate, update_id)
        assert row is not None and row.status == "withdrawn" and row.review_note == ""


async def test_an_edit_cannot_revive_a_withdrawn_update(chat: Transcript, demo_db: Database) -> None:
    update_id = await file_update(chat)
    await chat.say(f"/edit {update_id}", as_=FP_CHILE)
    async with demo_db.transaction() as session:  # withdrawn from another device meanwhile
        row = await session.get(NationalUpdate, update_id)
        assert row is not None
        row.status, row.version = "withdrawn", row.version + 1
    for answer in ("-", "New title", "-", "-", "-", "-"):
        await chat.say(answer, as_=FP_CHILE)
    assert chat.keys[-1] in ("updates.not_editable", "updates.changed_meanwhile")
    async with demo_db.transaction() as session:
        row = await session.get(NationalUpdate, update_id)
        assert row is not None and row.status == "withdrawn" and row.title == CHILE_NAP[0]
