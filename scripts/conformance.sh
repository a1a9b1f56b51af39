#!/usr/bin/env bash
# Conformance of the running service to its own OpenAPI documents, with schemathesis.
#
# Builds tandem, starts it in dev mode on a free port with a fresh data directory, seeds an
# audience and entitlements so that operations can succeed, and runs `schemathesis run` with
# every check (`--checks all`) and every phase against /bankingAdmin/apiDoc and
# /invitations/apiDoc. Prints schemathesis's output; exits non-zero if either run fails.
#
# Environment:
#   TANDEM_CONFORMANCE_PROFILE   release (default) or dev (reuses the debug build of cargo test)
#   TANDEM_CONFORMANCE_EXAMPLES  test cases per operation and phase (default 100; CI uses fewer)
#   TANDEM_CONFORMANCE_SEED      schemathesis seed, to replay a run
set -euo pipefail
cd "$(dirname "$0")/.."

schemathesis_version=4.32.5
profile="${TANDEM_CONFORMANCE_PROFILE:-release}"
examples="${TANDEM_CONFORMANCE_EXAMPLES:-100}"

# schemathesis, pinned: the installed one if it is this version, else a venv under target/.
schemathesis=schemathesis
if ! command -v schemathesis >/dev/null ||
  [ "$(schemathesis --version 2>/dev/null | awk '{print $NF}')" != "$schemathesis_version" ]; then
  venv=target/conformance-venv
  if [ ! -x "$venv/bin/schemathesis" ] ||
    [ "$("$venv/bin/schemathesis" --version | awk '{print $NF}')" != "$schemathesis_version" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$schemathesis_version"
  fi
  schemathesis="$venv/bin/schemathesis"
fi

case "$profile" in
  release) cargo build --locked --release --bin tandem; tandem=target/release/tandem ;;
  # The binary as `cargo test` builds it (with the dev-dependencies' features), which after a
  # test run is already there: `cargo build` would compile a dozen crates again for it.
  dev) cargo test --locked --no-run --quiet; tandem=target/debug/tandem ;;
  *) echo "TANDEM_CONFORMANCE_PROFILE must be release or dev, not $profile" >&2; exit 2 ;;
esac

data="$(mktemp -d)"
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT

# The customer who invites, the account and organization they hold, and an audience.
customer=customer-0001
printf '%s\n' "$customer" customer-0002 customer-0003 |
  "$tandem" audiences import --data-dir "$data" --id audience-0001 --name "Conformance audience" -
cat >"$data/entitlements.csv" <<CSV
customerId,resourceUri,role,jointOwnersDisabled
$customer,https://api.example.com/accounts/accounts/acct-0001,owner,false
$customer,https://api.example.com/organizations/organizations/org-0001,owner,false
CSV
"$tandem" entitlements import --data-dir "$data" "$data/entitlements.csv"

credential() { # the bearer token from `tandem dev-credentials "$@"`
  "$tandem" dev-credentials --data-dir "$data" "$@" | sed -n 's/^Authorization: Bearer //p'
}
TANDEM_CONFORMANCE_API_KEY="$("$tandem" dev-credentials --data-dir "$data" | sed -n 's/^API-Key: //p')"
TANDEM_CONFORMANCE_STAFF_TOKEN="$(credential --admin)"
customer_token="$(credential --sub "$customer")"
export TANDEM_CONFORMANCE_API_KEY TANDEM_CONFORMANCE_STAFF_TOKEN

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
addr="127.0.0.1:$port"
# Requests per client (100 a second), verification attempts per client address (10 per
# window) and invitation creates (20 a day per customer, 5 open per account) are limited, which
# would answer much of schemathesis's traffic with 429 or 409 and leave the operations' logic
# untested; the integration tests check these limits.
cat >"$data/tandem.toml" <<TOML
mode = "dev"

[rate_limit]
per_second = 0

[invitations]
verify_max_attempts_per_ip = 1000000
daily_invitations_per_customer = 0
open_invitations_per_resource = 0
TOML
"$tandem" serve --config "$data/tandem.toml" --data-dir "$data" --addr "$addr" >"$data/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  if curl -sf -o /dev/null "http://$addr/health"; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then cat "$data/server.log" >&2; exit 1; fi
  sleep 0.1
done

# Invitations for the operations on one invitation to find, so that their cases reach more
# than "404 Not Found" for generated ids: ten sent, ten more each for deleteInvitation and
# revokeInvitation alone, and one accepted (verified with its shared secret) for
# completeInvitation. schemathesis.toml binds them to the id parameters.
api() { # method, path, bearer token, JSON body; prints the response body, fails on non-2xx
  local body
  if ! body="$(curl -sS --fail-with-body -X "$1" "http://$addr$2" -H "Content-Type: application/json" \
    -H "API-Key: $TANDEM_CONFORMANCE_API_KEY" -H "Authorization: Bearer $3" -d "$4")"; then
    echo "$1 $2 failed: $body" >&2
    return 1
  fi
  printf '%s\n' "$body"
}
invite() { # prints the id of a new invitation from the customer
  local created
  created="$(api POST /invitations/invitations "$customer_token" '{
    "type": "joint", "accountUri": "https://api.example.com/accounts/accounts/acct-0001",
    "inviterFullName": "Conformance Customer", "emailAddress": "invitee@example.com",
    "firstName": "Ivy", "lastName": "Invitee", "sharedSecret": "conformance secret"}')"
  python3 -c 'import json, sys; print(json.load(sys.stdin)["_id"])' <<<"$created"
}
# schemathesis reads dictionary files beside its configuration, so all go to the data directory.
cp scripts/conformance/schemathesis.toml "$data/schemathesis.toml"
for pool in sent deletable revocable; do
  for _ in $(seq 10); do printf '"%s"\n' "$(invite)"; done >"$data/$pool-invitations.dict"
done
accepted="$(invite)"
api POST /invitations/verifications "$customer_token" \
  "{\"invitationId\": \"$accepted\", \"sharedSecret\": \"conformance secret\"}" >/dev/null
printf '"%s"\n' "$accepted" >"$data/accepted-invitations.dict"

seed_args=()
if [ -n "${TANDEM_CONFORMANCE_SEED:-}" ]; then seed_args=(--seed "$TANDEM_CONFORMANCE_SEED"); fi
export SCHEMATHESIS_HOOKS="$PWD/scripts/conformance/hooks.py"

run() { # API name, token; prints schemathesis's report and returns its status
  echo "== schemathesis: $1 =="
  TANDEM_CONFORMANCE_TOKEN="$2" "$schemathesis" --config-file "$data/schemathesis.toml" \
    run "http://$addr/$1/apiDoc" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$examples" \
    --workers 1 \
    --no-color \
    "${seed_args[@]}"
}

status=0
run bankingAdmin "$TANDEM_CONFORMANCE_STAFF_TOKEN" || status=1
run invitations "$customer_token" || status=1
if [ "$status" != 0 ]; then
  echo "== server log (last 40 lines) =="
  tail -n 40 "$data/server.log"
fi
exit "$status"
