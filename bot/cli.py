"""`fpbot`: the one console command. `fpbot --help` lists what it does."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from bot import logs
from bot.adapters import AdapterSetupError, configured
from bot.adapters.console import ANONYMOUS, ConsoleAdapter
from bot.app import BotApp
from bot.delivery.report import failed_deliveries
from bot.runner import run_until_signalled, serve
from bot.settings import Settings
from storage.db import StoreUnavailable, safe_url
from storage.demo import demo_people, load_demo
from storage.invitations import create_invitation
from storage.models import Person
from storage.roster import export_roster, import_roster, load_members, set_chair

log = logging.getLogger(__name__)

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fpbot",
        description="Focal Points Bot: the chat assistant of the WPS Focal Points Network.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run every configured adapter and the scheduler "
                                     "(the console chat when no platform token is set)")
    run.add_argument("--as", dest="email", help="with the console: speak as this person")
    serve_ = sub.add_parser("serve", help="serve the Telegram and Slack webhooks over HTTP")
    serve_.add_argument("--host", help="address to listen on (default: $HOST or 127.0.0.1)")
    serve_.add_argument("--port", type=int, help="port (default: $PORT or 8080)")
    chat = sub.add_parser("chat", help="talk to the bot in this terminal, or through a pipe")
    chat.add_argument("--as", dest="email", help="speak as the person with this e-mail")

    db = sub.add_parser("db", help="the database schema")
    db.add_subparsers(dest="action", required=True).add_parser(
        "upgrade", help="apply pending migrations")

    roster = sub.add_parser("roster", help="people and their roles, as CSV")
    ra = roster.add_subparsers(dest="action", required=True)
    ri = ra.add_parser("import", help="add or update people from a CSV file (all or nothing)")
    ri.add_argument("file", type=Path)
    re_ = ra.add_parser("export", help="write the roster as CSV")
    re_.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")

    members = sub.add_parser("members", help="the Network's members")
    ma = members.add_subparsers(dest="action", required=True)
    mi = ma.add_parser("import", help="load members (default: the 78 of December 2017)")
    mi.add_argument("file", type=Path, nargs="?")

    chair = sub.add_parser("chair", help="record the chair of a year (the troika follows)")
    chair.add_argument("year", type=int)
    chair.add_argument("member", help="member code, e.g. germany")

    telegram = sub.add_parser("telegram", help="Telegram: register the webhook of fpbot serve")
    tg = telegram.add_subparsers(dest="action", required=True)
    sw = tg.add_parser("set-webhook", help="tell Telegram to send updates to URL (HTTPS)")
    sw.add_argument("url", help="the public address of fpbot serve, e.g. https://bot.example.org")

    # -- reminders and the digest (issue 12) --
    reminders = sub.add_parser("reminders", help="what reminders would go out, and what went")
    rem = reminders.add_subparsers(dest="action", required=True)
    rd = rem.add_parser("due", help="list the reminders due at a moment (nothing is sent)")
    rd.add_argument("--at", type=_moment, help="ISO date-time (UTC unless it has an offset); "
                                               "default: now")
    rs = rem.add_parser("sent", help="list the reminders queued or skipped since a day")
    rs.add_argument("--since", type=_moment, required=True, help="ISO date or date-time")
    dg = sub.add_parser("digest", help="the secretariat's digest")
    dg.add_argument("--preview", action="store_true", required=True,
                    help="print it (nothing is sent)")
    dg.add_argument("--at", type=_moment, help="as at this ISO date-time (default: now)")
    outbox = sub.add_parser("outbox", help="messages the bot could not deliver")
    outbox.add_subparsers(dest="action", required=True).add_parser(
        "failed", help="list the messages given up, with why, and unreachable accounts")

    sub.add_parser("demo", help="load the members, the 2017-2019 chairs and demo people")
    # --- newsletter (issue 11) ---
    newsletter = sub.add_parser("newsletter", help="newsletter drafts")
    na = newsletter.add_subparsers(dest="action", required=True)
    nd = na.add_parser("draft", help="compile an edition's draft into a file")
    nd.add_argument("--edition", type=int, help="edition number (default: the one collecting)")
    nd.add_argument("--format", choices=("html", "md", "docx"), default="html")
    nd.add_argument("--out", type=Path, required=True, help="file to write")
    invite = sub.add_parser("invite", help="print a one-time invitation code for a person")
    invite.add_argument("email")
    return p


def _moment(text: str) -> datetime:
    """An ISO date or date-time for the command line; naive means UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date or date-time (e.g. 2018-03-01T09:00)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@contextlib.asynccontextmanager
async def opened(settings: Settings, *, create: bool = False) -> AsyncIterator[BotApp]:
    """The bot with its store checked and migrated, closed on the way out; `create` lets an
    explicit first run (db upgrade, demo, imports) set up a new, empty store."""
    app = BotApp(settings)
    try:
        await app.open(create=create)
        yield app
    finally:
        await app.close()


async def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings, create=True) as app:
        pass
    print(f"database {safe_url(app.db.url)} is up to date")
    return 0


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings, create=True) as app:
        async with app.db.transaction() as session:
            added, report = await load_demo(session, app.clock.now(), newsletter=True)
            people = await demo_people(session) if report.ok else []
        if not report.ok:
            print("\n".join(report.errors), file=sys.stderr)
            return 1
        print(f"Demo data loaded into {safe_url(app.db.url)}: {added} members added, "
              f"chairs 2017-2019 (Spain, Germany, Namibia), "
              f"{report.people_added} of {len(people)} demo people added.")
        print("Demo people (all marked “(demo)”; addresses at demo.invalid):")
        width = max(len(email) for email, _ in people)
        for email, what in people:
            print(f"  {email:<{width}}  {what}")
        print("Newsletter edition 1 is collecting: fpbot newsletter draft --edition 1 "
              "--format html --out draft.html")
        print("Try: fpbot chat --as fp.chile@demo.invalid")
        print("Meetings: two upcoming ones are open for registration (/meetings, /register 1).")
        return 0


async def cmd_members(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings, create=True) as app:
        async with app.db.transaction() as session:
            added = await (load_members(session, args.file) if args.file
                           else load_members(session))
        print(f"{added} members added")
        return 0


async def cmd_chair(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings) as app:
        try:
            async with app.db.transaction() as session:
                await set_chair(session, args.year, args.member)
        except LookupError as exc:
            print(f"fpbot: {exc.args[0]}", file=sys.stderr)
            return 1
        print(f"chair {args.year}: {args.member}")
        return 0


async def cmd_roster(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings, create=args.action == "import") as app:
        if args.action == "export":
            async with app.db.transaction() as session:
                text = await export_roster(session)
            if args.output:
                args.output.write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
            return 0
        try:
            text = args.file.read_text(encoding="utf-8-sig")
        except OSError as exc:
            print(f"fpbot: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 1
        async with app.db.transaction() as session:
            report = await import_roster(session, text, app.clock.now())
            if not report.ok:
                await session.rollback()
        if not report.ok:
            print(f"{args.file}: nothing imported, {len(report.errors)} problem(s):",
                  file=sys.stderr)
            print("\n".join(f"  {e}" for e in report.errors), file=sys.stderr)
            return 1
        print(f"{args.file}: {report.people_added} people added, {report.people_updated} "
              f"updated, {report.roles_added} roles added")
        return 0


async def cmd_invite(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings) as app:
        async with app.db.transaction() as session:
            person = await session.scalar(
                select(Person).where(Person.email == args.email.strip().lower()))
            if person is None:
                print(f"fpbot: nobody with the e-mail {args.email} is on the roster",
                      file=sys.stderr)
                return 1
            code, invitation = await create_invitation(
                session, person.id, "invite", now=app.clock.now(),
                ttl=app.core.config.invite_ttl)
        print(f"{code}  (for {person.name}; send /start {code} to the bot; "
              f"valid until {invitation.expires_at:%Y-%m-%d %H:%M} UTC, once)")
        return 0


async def cmd_reminders(args: argparse.Namespace, settings: Settings) -> int:
    from handlers.reminders import due_reminders, reminders_sent

    async with opened(settings) as app, app.db.transaction() as session:
        if args.action == "due":
            at = args.at or app.clock.now()
            due = [c for c in await due_reminders(session, at=at) if c.status == "due"]
            print(f"{len(due)} reminder(s) due at {at:%Y-%m-%d %H:%M} UTC")
            for c in due:
                platforms = ",".join(sorted({i.platform for i in c.person.identities})) or "-"
                about = f"{c.deadline.title}" + (f" [{c.member.name}]" if c.member else "")
                print(f"  {c.person.name} <{c.person.email}>  {platforms}  #{c.deadline.id} "
                      f"{about}  {c.offset} ({c.role}{', handed over' if c.handed_over else ''})")
            return 0
        rows = await reminders_sent(session, args.since)
        print(f"{len(rows)} reminder(s) recorded since {args.since:%Y-%m-%d %H:%M} UTC")
        for r, person, deadline in rows:
            what = "queued" if r.status == "queued" else f"skipped ({r.reason})"
            print(f"  {r.created_at:%Y-%m-%d %H:%M}  {person.name} <{person.email}>  "
                  f"#{deadline.id} {deadline.title}  {r.offset}  {what}")
        return 0


async def cmd_digest(args: argparse.Namespace, settings: Settings) -> int:
    from handlers.digest import build_digest

    async with opened(settings) as app, app.db.transaction() as session:
        at = args.at or app.clock.now()
        context = await build_digest(session, at)
        print(app.renderer.render("digest.weekly", "en", "plain", tz="UTC", **context))
        return 0


async def _console(app: BotApp, email: str | None) -> int:
    user, name = ANONYMOUS, ""
    if email:
        person = await app.core.console_identity(email)
        if person is None:
            print(f"fpbot: nobody with the e-mail {email} is on the roster "
                  "(load the demo people with: fpbot demo)", file=sys.stderr)
            return 1
        user, name = person.email, person.name
    console = ConsoleAdapter(app.core, app.renderer, user=user, display_name=name,
                             files_dir=Path(app.settings.files_dir))
    await app.core.resume_outbox("console", user)
    await app.liveness.start()  # the notices it sends are claimed by this live instance
    app.sender.channels["console"] = console
    try:
        if sys.stdin.isatty():
            print(console.banner() + "\n")
        await app.sender.flush()
        resumed = await app.core.form_in_progress("console", user)
        if resumed is not None:  # a form left open in an earlier session: where it stands
            console.show([resumed])
        await console.run(outbox_sweep=app.sender.flush)
    finally:
        app.sender.channels.pop("console", None)
        await app.liveness.stop()
    return 0


async def cmd_outbox(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings) as app:
        failed, unreachable = await failed_deliveries(app.db)
    if not failed and not unreachable:
        print("nothing failed: every message went out or is still being tried")
        return 0
    for row in failed:
        print(row)
    for line in unreachable:
        print(line)
    return 0


async def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings) as app:
        return await _console(app, args.email)


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings) as app:
        if not settings.platforms:
            print("No TELEGRAM_TOKEN or SLACK_BOT_TOKEN is set: opening the console chat.",
                  file=sys.stderr)
            app.start_scheduler()
            return await _console(app, args.email)
        await run_until_signalled(app, configured(app))
        return 0


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings) as app:
        adapters = configured(app)
        if not adapters and not settings.secret_key:
            print("fpbot: no TELEGRAM_TOKEN, SLACK_BOT_TOKEN or FPBOT_SECRET_KEY is set: "
                  "nothing to serve", file=sys.stderr)
            return 1
        if not adapters:  # the secretariat's newsletter previews (and /healthz) only
            log.info("no platform token set: serving the newsletter previews and /healthz only")
        await serve(app, adapters, args.host or settings.host, args.port or settings.port)
        return 0


async def cmd_newsletter(args: argparse.Namespace, settings: Settings) -> int:
    """`fpbot newsletter draft`: an edition's draft, recorded like one asked for in chat."""
    from handlers.newsletter_draft import compile_draft, render
    from storage import editions

    async with opened(settings) as app:
        async with app.db.transaction() as session:
            edition = await (editions.by_number(session, args.edition) if args.edition
                             else editions.current(session))
            if edition is None:
                which = f"edition {args.edition}" if args.edition else "edition to compile"
                print(f"fpbot: there is no {which} (fpbot demo loads edition 1)",
                      file=sys.stderr)
                return 1
            draft = await compile_draft(session, edition, app.renderer, now=app.clock.now(),
                                        by=None)
            content = render(draft, args.format)
        try:
            args.out.write_bytes(content)
        except OSError as exc:
            print(f"fpbot: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"{args.out}: edition {edition.number} ({edition.title}), draft {draft.number}"
              f"{'' if draft.is_new else ' (unchanged)'}, {len(draft.items)} items, "
              f"{args.format}, {len(content)} bytes")
        return 0


async def cmd_telegram(args: argparse.Namespace, settings: Settings) -> int:
    from bot.adapters.telegram import set_webhook

    app = BotApp(settings)
    try:
        print(f"Telegram now sends this bot's updates to {await set_webhook(app, args.url)}")
        return 0
    except ValueError as exc:
        print(f"fpbot: {exc}", file=sys.stderr)
        return 1
    finally:
        await app.close()


COMMANDS = {
    "run": cmd_run, "serve": cmd_serve, "chat": cmd_chat, "db": cmd_db, "roster": cmd_roster,
    "members": cmd_members, "telegram": cmd_telegram, "chair": cmd_chair, "demo": cmd_demo,
    "invite": cmd_invite, "outbox": cmd_outbox, "newsletter": cmd_newsletter,
    "reminders": cmd_reminders, "digest": cmd_digest,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.load()
    chatting = args.command == "chat" or (args.command == "run" and not settings.platforms)
    logs.setup("ERROR" if chatting else settings.log_level, settings.secrets)
    try:
        return asyncio.run(COMMANDS[args.command](args, settings))
    except (StoreUnavailable, AdapterSetupError) as exc:
        print(f"fpbot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `fpbot chat ... | head`: the reader has gone; leave quietly
        _silence_stdout()
        return 128 + signal.SIGPIPE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the flush at exit cannot fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
