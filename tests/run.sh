#!/usr/bin/env bash
# The project's one test command: `bash tests/run.sh [pytest args...]`.
# 1. makes/refreshes a virtualenv with the project's dev extra,
# 2. installs Debian's Chromium when missing (the newsletter rendering tests need it) and
#    starts a throw-away PostgreSQL cluster (unless TEST_DATABASE_URL is set),
# 3. runs pytest inside the venv, a worker per core. Pytest exit 5 ("no tests collected") fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --- 1. virtualenv --------------------------------------------------------
VENV=${FPBOT_VENV:-.venv}
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "run.sh: creating virtualenv $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
# Reinstall only when pyproject.toml changed since the last good install.
STAMP="$VENV/.fpbot-pyproject.sha256"
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]]; then
    echo "run.sh: installing project (.[dev]) into $VENV"
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
    echo "$WANT" >"$STAMP"
fi

# --- 1b. Debian's Chromium, for the newsletter's headless rendering tests ---
if [[ ! -x /usr/bin/chromium ]]; then
    if [[ $EUID -ne 0 ]]; then
        echo "run.sh: /usr/bin/chromium not found and not root: install Debian's 'chromium'" >&2
        exit 1
    fi
    echo "run.sh: installing Chromium (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    [[ -x /usr/bin/chromium ]] || { echo "run.sh: Chromium install gave no /usr/bin/chromium" >&2; exit 1; }
fi

# --- 2. throw-away PostgreSQL ---------------------------------------------
PGTMP=""
cleanup() {
    local rc=$?
    if [[ -n "$PGTMP" ]]; then
        if [[ -f "$PGTMP/data/postmaster.pid" ]]; then
            as_pg "$PGBIN/pg_ctl" -D "$PGTMP/data" -m fast -w stop >/dev/null 2>&1 || true
        fi
        rm -rf "$PGTMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run a PostgreSQL server command: as `postgres` when root (initdb refuses
# root), else as ourselves. cd into the temp dir so postgres can read its cwd.
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        (cd "$PGTMP" && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

find_pgbin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -z "$d" ]] && command -v pg_config >/dev/null; then
        d=$(pg_config --bindir 2>/dev/null || true)
    fi
    [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]] && echo "$d"
}

if [[ -z "${TEST_DATABASE_URL:-}" ]]; then
    PGBIN=$(find_pgbin || true)
    if [[ -z "$PGBIN" ]]; then
        if [[ $EUID -ne 0 ]]; then
            echo "run.sh: PostgreSQL server binaries not found and not root:" \
                 "install Debian's 'postgresql' or set TEST_DATABASE_URL" >&2
            exit 1
        fi
        echo "run.sh: installing PostgreSQL (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        PGBIN=$(find_pgbin || true)
        [[ -n "$PGBIN" ]] || { echo "run.sh: PostgreSQL install gave no initdb" >&2; exit 1; }
    fi
    if [[ $EUID -eq 0 ]] && ! id -u postgres >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /bin/sh postgres
    fi

    PGTMP=$(mktemp -d /tmp/fpbot-pg.XXXXXX)  # /tmp: the postgres user can reach it
    [[ $EUID -eq 0 ]] && chown postgres: "$PGTMP"
    PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

    if ! as_pg "$PGBIN/initdb" -D "$PGTMP/data" -U postgres -A trust -E UTF8 \
            --no-locale --no-sync >"$PGTMP/initdb.log" 2>&1; then
        echo "run.sh: initdb failed:" >&2; tail -n 40 "$PGTMP/initdb.log" >&2; exit 1
    fi
    if ! as_pg "$PGBIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGTMP -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            start >/dev/null; then
        echo "run.sh: PostgreSQL did not start; server log tail:" >&2
        tail -n 40 "$PGTMP/server.log" >&2 || true
        exit 1
    fi
    "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres fpbot_test
    export TEST_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:$PGPORT/fpbot_test"
    echo "run.sh: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT"
fi
# The PostgreSQL tests must run, not skip.
export FPBOT_REQUIRE_POSTGRES=1

# --- 3. pytest --------------------------------------------------------------
# One worker per core (pytest-xdist); FPBOT_TEST_WORKERS=0 runs everything in this process.
rc=0
"$VENV/bin/python" -m pytest -n "${FPBOT_TEST_WORKERS:-auto}" "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
    echo "run.sh: pytest collected no tests (exit 5): failing" >&2
    rc=1
fi
exit "$rc"
