"""`fpbot serve` with no platform token serves the secretariat's newsletter previews, and the
signed link (a bearer pass for days) never reaches the log."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

FPBOT = [sys.executable, "-m", "bot.cli"]
SECRET = "preview-secret-for-the-test-0123456789"


def _env(workdir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'fpbot.db'}",
           "PORT": str(port), "FPBOT_PUBLIC_URL": f"http://127.0.0.1:{port}", **extra}
    for var in ("TELEGRAM_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        env.pop(var, None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "fpbot serve exited"
        try:
            return httpx.get(f"{url}/healthz", timeout=2)
        except httpx.TransportError:
            time.sleep(0.1)  # polling a starting process's port: nothing to wait on instead
    raise AssertionError("fpbot serve did not answer")


def test_serve_without_a_platform_serves_previews_and_logs_no_link(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(tmp_path, port, FPBOT_SECRET_KEY=SECRET)
    subprocess.run([*FPBOT, "demo"], env=env, cwd=tmp_path, check=True, capture_output=True,
                   timeout=60)
    chat = subprocess.run([*FPBOT, "chat", "--as", "coordinator@demo.invalid"], env=env,
                          cwd=tmp_path, input="/newsletter 1 preview\n", capture_output=True,
                          text=True, timeout=60)
    found = re.search(r"http://127\.0\.0\.1:\d+/newsletter/preview/\S+", chat.stdout)
    assert found, chat.stdout
    link = found.group(0)
    proc = subprocess.Popen([*FPBOT, "serve"], env={**env, "FPBOT_LOG_LEVEL": "INFO"},
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        health = _wait_healthy(f"http://127.0.0.1:{port}", proc)
        assert health.status_code == 200, health.text
        page = httpx.get(link, timeout=10)
        assert page.status_code == 200 and "Focal point spotlight" in page.text
        forged = link[:-1] + ("A" if link[-1] != "A" else "B")
        assert httpx.get(forged, timeout=10).status_code == 403
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    token = link.rsplit("/", 1)[1]
    assert "serving the newsletter previews and /healthz only" in out
    assert "GET /newsletter/preview/***" in out, out
    assert token not in out and SECRET not in out


def test_serve_with_nothing_to_serve_says_so_in_one_line(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(tmp_path, port)
    env.pop("FPBOT_SECRET_KEY", None)
    subprocess.run([*FPBOT, "demo"], env=env, cwd=tmp_path, check=True, capture_output=True,
                   timeout=60)
    result = subprocess.run([*FPBOT, "serve"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == ("fpbot: no TELEGRAM_TOKEN, SLACK_BOT_TOKEN or "
                                     "FPBOT_SECRET_KEY is set: nothing to serve")
