#!/usr/bin/env bash
# Crash safety: builds the release binary and the crash driver, then runs the driver on SQLite
# and on PostgreSQL. Each run kills the server with SIGKILL at random moments, restarts it and
# checks that every acknowledged write and every queued email survived (examples/crash.rs).
#
#   scripts/crash.sh [--kills N] [other driver options]
#
# PostgreSQL: TANDEM_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres)
# must allow creating and dropping databases; the driver makes its own tandem_crash_<pid>.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin tandem --example crash

status=0
for backend in sqlite postgres; do
    echo "== $backend"
    if ! target/release/examples/crash --backend "$backend" "$@"; then
        status=1
    fi
done
exit $status
