"""`fpbot` as a person uses it: demo data, a piped conversation, roster files, invitations."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FPBOT = [sys.executable, "-m", "bot.cli"]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'fpbot.db'}"}
    result = subprocess.run([*FPBOT, "demo"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "78 members added" in result.stdout
    return tmp_path


def fpbot(workdir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'fpbot.db'}"}
    for var in ("TELEGRAM_TOKEN", "SLACK_BOT_TOKEN"):
        env.pop(var, None)
    return subprocess.run([*FPBOT, *args], env=env, cwd=workdir, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_a_piped_conversation_shows_the_focal_points_help(workdir: Path) -> None:
    result = fpbot(workdir, "chat", "--as", "fp.chile@demo.invalid", stdin="/start\n/help\n")
    assert result.returncode == 0, result.stderr
    assert "Welcome back, Catalina Rojas (demo). You are focal point of Chile." in result.stdout
    assert "/whoami · who I think you are" in result.stdout
    assert "/requests" not in result.stdout
    assert result.stderr == ""


def test_run_without_tokens_opens_the_console_and_says_so_in_one_line(workdir: Path) -> None:
    result = fpbot(workdir, "run", "--as", "coordinator@demo.invalid", stdin="/help\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "No TELEGRAM_TOKEN or SLACK_BOT_TOKEN is set: opening the console chat."]
    assert "/requests" in result.stdout


def test_a_stranger_requests_membership_and_the_secretariat_hears_of_it(workdir: Path) -> None:
    answers = "/start\nUruguay\nAna Pérez\nDirector\nMinistry of Foreign Affairs\nana@example.org\n"
    result = fpbot(workdir, "chat", stdin=answers)
    assert "Your request (#1) to join as focal point of Uruguay" in result.stdout
    secretariat = fpbot(workdir, "chat", "--as", "coordinator@demo.invalid", stdin="1\n")
    assert "[notice]\nNew membership request #1" in secretariat.stdout
    assert "Approved: Ana Pérez is now focal point of Uruguay" in secretariat.stdout
    again = fpbot(workdir, "chat", stdin="/whoami\n")
    assert "[notice]\nGood news, Ana Pérez" in again.stdout
    assert "Focal point of Uruguay" in again.stdout


def test_an_unknown_person_cannot_open_the_console(workdir: Path) -> None:
    result = fpbot(workdir, "chat", "--as", "nobody@example.org")
    assert result.returncode == 1
    assert "nobody with the e-mail nobody@example.org" in result.stderr


def test_roster_import_reports_every_bad_row_and_imports_nothing(workdir: Path) -> None:
    bad = workdir / "roster.csv"
    bad.write_text("email,name,role,members\n"
                   "a@example.org,A,focal_point,atlantis\n"
                   "a@example.org,B,focal_point,chile\n", encoding="utf-8")
    result = fpbot(workdir, "roster", "import", str(bad))
    assert result.returncode == 1
    assert "nothing imported, 2 problem(s)" in result.stderr
    assert "line 2: unknown member 'atlantis'" in result.stderr
    assert "line 3: duplicate e-mail a@example.org (already on line 2)" in result.stderr
    exported = fpbot(workdir, "roster", "export")
    assert "a@example.org" not in exported.stdout


def test_roster_import_then_invite(workdir: Path) -> None:
    good = workdir / "roster.csv"
    good.write_text("email,name,role,members\nfp.chile@minrel.example.org,Ana,focal_point,chile\n",
                    encoding="utf-8")
    assert fpbot(workdir, "roster", "import", str(good)).returncode == 0
    invited = fpbot(workdir, "invite", "fp.chile@minrel.example.org")
    assert invited.returncode == 0
    code = invited.stdout.split()[0]
    welcome = fpbot(workdir, "chat", stdin=f"/start {code}\n/whoami\n")
    assert "Welcome, Ana!" in welcome.stdout and "fp.chile@minrel.example.org" in welcome.stdout


def test_a_missing_roster_file_is_one_line(workdir: Path) -> None:
    result = fpbot(workdir, "roster", "import", "nope.csv")
    assert result.returncode == 1 and "Traceback" not in result.stderr
