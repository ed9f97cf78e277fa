"""`fpbot demo` then `fpbot newsletter draft` from the outside, and drafts asked for at the console."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import html5lib
from docx import Document

FPBOT = [sys.executable, "-m", "bot.cli"]


def fpbot(workdir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'fpbot.db'}"}
    for var in ("TELEGRAM_TOKEN", "SLACK_BOT_TOKEN", "FPBOT_SECRET_KEY"):
        env.pop(var, None)
    return subprocess.run([*FPBOT, *args], env=env, cwd=workdir, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_demo_then_a_draft_in_each_format(tmp_path: Path) -> None:
    demo = fpbot(tmp_path, "demo")
    assert demo.returncode == 0, demo.stderr
    assert "Newsletter edition 1 is collecting" in demo.stdout
    for fmt in ("html", "docx", "md"):
        result = fpbot(tmp_path, "newsletter", "draft", "--edition", "1", "--format", fmt,
                       "--out", f"draft.{fmt}")
        assert result.returncode == 0, result.stderr
        assert f"draft.{fmt}: edition 1 (National action plans, and the road to Berlin), " \
               "draft 1" in result.stdout and "8 items" in result.stdout
    html = (tmp_path / "draft.html").read_text(encoding="utf-8")
    html5lib.HTMLParser(strict=True).parse(html)
    assert "Focal point spotlight" in html and "Progress indicators in Chile" in html
    doc = Document(io.BytesIO((tmp_path / "draft.docx").read_bytes()))
    assert "Civil society voices" in [p.text for p in doc.paragraphs]
    md = (tmp_path / "draft.md").read_text(encoding="utf-8")
    assert md.startswith("# Newsletter: National action plans, and the road to Berlin")
    again = fpbot(tmp_path, "demo")  # safe to run again: no second edition 1
    assert again.returncode == 0, again.stderr
    same = fpbot(tmp_path, "newsletter", "draft", "--format", "md", "--out", "again.md")
    assert "draft 1 (unchanged)" in same.stdout
    assert (tmp_path / "again.md").read_text(encoding="utf-8") == md


def test_a_missing_edition_or_an_unwritable_file_is_said_plainly(tmp_path: Path) -> None:
    assert fpbot(tmp_path, "demo").returncode == 0
    missing = fpbot(tmp_path, "newsletter", "draft", "--edition", "4", "--out", "x.html")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "fpbot: there is no edition 4 (fpbot demo loads edition 1)"
    unwritable = fpbot(tmp_path, "newsletter", "draft", "--out", "no/such/folder/x.html")
    assert unwritable.returncode == 1 and "cannot write no/such/folder/x.html" in unwritable.stderr


def test_the_console_saves_a_draft_in_the_files_folder(tmp_path: Path) -> None:
    assert fpbot(tmp_path, "demo").returncode == 0
    result = fpbot(tmp_path, "chat", "--as", "coordinator@demo.invalid",
                   stdin="/newsletter 1 docx\n")
    assert result.returncode == 0, result.stderr
    assert "Draft 1 of edition 1 (National action plans, and the road to Berlin), docx: " \
           "8 items." in result.stdout
    saved = tmp_path / "fpbot-files" / "newsletter-edition-1-draft-1.docx"
    assert f"saved as {saved.relative_to(tmp_path)}]" in result.stdout
    assert saved.read_bytes().startswith(b"PK")
