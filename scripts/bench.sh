#!/usr/bin/env bash
# Load benchmark: builds the release binary, seeds 100k audience connections and 1M invitations
# on SQLite and on PostgreSQL, runs wrk against each operation and against an axum hello-world
# baseline in the same run, and prints one markdown table (req/s, p50, p99, non-2xx, ratio to
# the baseline, peak RSS) and whether the performance targets are met.
#
# Needs wrk (Debian package `wrk`), chrt (util-linux), python3 (to find free ports) and, for the
# PostgreSQL part, a server at 127.0.0.1:5432 that trusts local connections (psql and pgbench,
# from the PostgreSQL client package). pgbench measures PostgreSQL alone, without HTTP or
# tandem, on what a get asks of it (the `pgbench-` rows).
#
# Settings (environment):
#   BENCH_DURATION=10s        wrk -d for each operation (e.g. BENCH_DURATION=3s for a quick run)
#   BENCH_WARMUP=3s           reads before the measured runs of each backend
#   BENCH_THREADS=2           wrk -t
#   BENCH_CONNECTIONS=32      wrk -c
#   BENCH_BACKENDS="sqlite postgres"
#   BENCH_AUDIENCE_CONNECTIONS=100000  BENCH_INVITATIONS=1000000  BENCH_CUSTOMERS=10000
#   BENCH_LIST_LIMIT=100      page size of the connection list (the invitation list's default is 100)
#   BENCH_PACED_CLIENTS=8 BENCH_PACED_PAUSE_MS=40   the paced list runs: that many clients, each
#                             pausing that long after every answer (about 200 req/s offered)
#   BENCH_PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres
#   BENCH_PG_DATABASE=tandem_bench     created and dropped by this script
#   BENCH_WORK=DIR            where data, id lists, logs and results go (default: a new temp dir)
#   BENCH_WRK_SCHED=batch     wrk's scheduling policy: batch (`chrt --batch 0`) or normal. As
#                             SCHED_BATCH, wrk's wake-ups on each answer do not preempt the
#                             server it shares the cores with; the gets and the baseline are
#                             measured once more with the other policy (`-wrk-normal` rows).
set -euo pipefail

DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-3s}
WRK_SCHED=${BENCH_WRK_SCHED:-batch}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
AUDIENCE_CONNECTIONS=${BENCH_AUDIENCE_CONNECTIONS:-100000}
INVITATIONS=${BENCH_INVITATIONS:-1000000}
CUSTOMERS=${BENCH_CUSTOMERS:-10000}
LIST_LIMIT=${BENCH_LIST_LIMIT:-100}
PACED_CLIENTS=${BENCH_PACED_CLIENTS:-8}
PACED_PAUSE_MS=${BENCH_PACED_PAUSE_MS:-40}
PG_ADMIN_URL=${BENCH_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_DATABASE=${BENCH_PG_DATABASE:-tandem_bench}
SECRET="benchmark shared secret"
# The customer whose requests and statements the benchmark sends (customer 1 of bench_seed).
CUSTOMER_ID=cust-000001

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${BENCH_WORK:-$(mktemp -d -t tandem-bench.XXXXXX)}
mkdir -p "$WORK"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
TANDEM="$ROOT/target/release/tandem"
EXAMPLES="$ROOT/target/release/examples"

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
command -v chrt >/dev/null || { echo "chrt is not installed (apt-get install util-linux)" >&2; exit 1; }
if [[ " $BACKENDS " == *" postgres "* ]]; then
  for tool in psql pgbench; do
    command -v "$tool" >/dev/null ||
      { echo "$tool is not installed (apt-get install postgresql-client)" >&2; exit 1; }
  done
fi
case "$WRK_SCHED" in
  batch) OTHER_SCHED=normal ;;
  normal) OTHER_SCHED=batch ;;
  *) echo "BENCH_WRK_SCHED must be batch or normal, not $WRK_SCHED" >&2; exit 1 ;;
esac

# The server this script started last, stopped on any exit.
SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap stop_server EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # URL
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "the server exited before answering $1" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "no answer from $1 after 30s" >&2
  return 1
}

peak_rss_mb() { # PID
  awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# with_policy POLICY COMMAND...: runs COMMAND as SCHED_BATCH when POLICY is batch, else as is.
with_policy() {
  if [[ "$1" == batch ]]; then chrt --batch 0 "${@:2}"; else "${@:2}"; fi
}

# run_wrk BACKEND OP SCRIPT URL DURATION [THREADS CONNECTIONS]: appends the result line to
# $RESULTS (unless the backend is "warmup"). wrk runs with the policy $SCHED (default
# $WRK_SCHED).
run_wrk() {
  local backend=$1 op=$2 script=$3 url=$4 duration=$5 threads=${6:-$THREADS}
  local connections=${7:-$CONNECTIONS} pause_ms=${8:-} output
  output=$(BENCH_OP=$op BENCH_LUA_DIR="$ROOT/scripts/bench" BENCH_THREADS=$threads \
    BENCH_PAUSE_MS=$pause_ms \
    with_policy "${SCHED:-$WRK_SCHED}" wrk -t"$threads" -c"$connections" -d"$duration" \
    --timeout 10s -s "$ROOT/scripts/bench/$script.lua" "$url")
  local line
  line=$(grep '^BENCH_RESULT ' <<<"$output") || {
    echo "wrk printed no result for $op:" >&2
    echo "$output" >&2
    return 1
  }
  if [[ "$backend" != warmup ]]; then
    echo "$backend $line" >>"$RESULTS"
    echo "  $backend $op: $line" | sed 's/BENCH_RESULT op=[^ ]* //' >&2
  fi
}

# run_pgbench URL IDS: PostgreSQL's own rate, with no HTTP and no tandem, for what a get and a
# list ask of it: a round trip (`SELECT 1`), the get-invitation's statement (every column of
# one of customer 1's invitations by id), and the two statements (page and count) of each
# measured invitation list, as they are sent (a unit test holds the files in
# scripts/bench/pgbench/ to the statements tandem builds). pgbench runs with wrk's clients,
# threads and scheduling policy.
run_pgbench() {
  local url=$1 ids=$2 seconds count output op
  case "$DURATION" in
    *s) seconds=${DURATION%s} ;;
    *m) seconds=$((${DURATION%m} * 60)) ;;
    *) seconds=$DURATION ;;
  esac
  # The ids to pick from, numbered: pgbench draws a number, not a text.
  psql "$url" -q -v ON_ERROR_STOP=1 \
    -c "CREATE TABLE bench_probe_ids (n integer PRIMARY KEY, id text NOT NULL)"
  awk '{ print NR "\t" $1 }' "$ids/invitations-of-customer-1.txt" |
    psql "$url" -q -v ON_ERROR_STOP=1 -c "\\copy bench_probe_ids FROM STDIN"
  count=$(wc -l <"$ids/invitations-of-customer-1.txt")
  # The statements' parameters: the three resources customer 1 holds, as the seed wrote them;
  # the lists' first page of 100 and their count's cap.
  local resources
  mapfile -t resources <"$ids/resources-of-customer-1.txt"
  if [[ ${#resources[@]} -ne 3 ]]; then
    echo "the customer list's statements take 3 resources; the seed gave customer 1" \
      "${#resources[@]} ($ids/resources-of-customer-1.txt)" >&2
    return 1
  fi
  local variables=(-D probe_ids="$count" -D now="$(date +%s%3N)" -D start=0 -D limit=100
    -D count_cap=1001 -D customer="$CUSTOMER_ID" -D resource1="${resources[0]}"
    -D resource2="${resources[1]}" -D resource3="${resources[2]}")
  for op in select-1 get-invitation list-invitations-customer list-invitations-staff; do
    output=$(with_policy "$WRK_SCHED" pgbench -n -M prepared -c "$CONNECTIONS" -j "$THREADS" \
      -T "$seconds" "${variables[@]}" -f "$ROOT/scripts/bench/pgbench/$op.sql" "$url" 2>&1) || {
      echo "pgbench failed for $op:" >&2
      echo "$output" >&2
      return 1
    }
    # No percentiles: pgbench's per-transaction log gave 0 µs to most transactions at this
    # concurrency (one clock reading serves many answers). Its mean latency is total time over
    # transactions.
    local line
    line=$(awk -v op="pgbench-$op" '
      /^number of transactions actually processed:/ { requests = $NF }
      /^latency average = / { mean = $4 }
      /^tps = / { rps = $3 }
      END { printf "BENCH_RESULT op=%s requests=%d rps=%.1f p50_ms= p99_ms= mean_ms=%s non2xx=0 socket_errors=0 beyond_pool=0\n", op, requests, rps, mean }
    ' <<<"$output")
    echo "postgres $line" >>"$RESULTS"
    echo "  postgres $line" | sed 's/BENCH_RESULT //' >&2
  done
  psql "$url" -q -v ON_ERROR_STOP=1 -c "DROP TABLE bench_probe_ids"
}

echo "== building the release binary and examples" >&2
(cd "$ROOT" && cargo build --release --bin tandem --examples)

# run_hello LABEL: the axum hello-world baseline with the same wrk settings.
run_hello() {
  local port
  port=$(free_port)
  "$EXAMPLES/hello" "127.0.0.1:$port" &
  SERVER_PID=$!
  wait_for "http://127.0.0.1:$port/"
  run_wrk warmup hello hello "http://127.0.0.1:$port/" "$WARMUP"
  run_wrk baseline "$1" hello "http://127.0.0.1:$port/" "$DURATION"
  SCHED=$OTHER_SCHED run_wrk baseline "$1-wrk-$OTHER_SCHED" hello "http://127.0.0.1:$port/" \
    "$DURATION"
  stop_server
}

for backend in $BACKENDS; do
  echo "== $backend" >&2
  dir="$WORK/$backend"
  rm -rf "$dir"
  mkdir -p "$dir"
  key=$(head -c 32 /dev/urandom | base64)
  database_line=""
  if [[ "$backend" == postgres ]]; then
    psql "$PG_ADMIN_URL" -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $PG_DATABASE" \
      -c "CREATE DATABASE $PG_DATABASE"
    database_line="url = \"${PG_ADMIN_URL%/*}/$PG_DATABASE\""
  elif [[ "$backend" != sqlite ]]; then
    echo "unknown backend $backend (sqlite or postgres)" >&2
    exit 1
  fi
  # Dev mode (generated credentials, loopback only) with the request rate limit off, the
  # per-address verification limit and the invitation create caps off (customer 1
  # creates all the benchmark's invitations, on one account) and the sync engine off, so that
  # they do not shape the figures; email goes to dev mode's .eml files as usual.
  cat >"$dir/tandem.toml" <<EOF
mode = "dev"

[database]
$database_line

[rate_limit]
per_second = 0.0

[invitations]
secret_key = "$key"
verify_max_attempts_per_ip = 1000000000
daily_invitations_per_customer = 0
open_invitations_per_resource = 0

[sync]
enabled = false
EOF
  echo "-- seeding" >&2
  "$EXAMPLES/bench_seed" --config "$dir/tandem.toml" --data-dir "$dir/data" --out "$dir/ids" \
    --connections "$AUDIENCE_CONNECTIONS" --invitations "$INVITATIONS" \
    --customers "$CUSTOMERS" --secret "$SECRET"

  # The baseline right before this backend's measurements, so that both see the same machine
  # load (other work on the machine changes absolute figures a lot; the ratio much less).
  echo "-- hello-world baseline" >&2
  run_hello "$backend"
  if [[ "$backend" == postgres ]]; then
    echo "-- PostgreSQL alone (pgbench)" >&2
    run_pgbench "${PG_ADMIN_URL%/*}/$PG_DATABASE" "$dir/ids"
  fi

  port=$(free_port)
  "$TANDEM" serve --config "$dir/tandem.toml" --data-dir "$dir/data" --addr "127.0.0.1:$port" \
    >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  base="http://127.0.0.1:$port"
  wait_for "$base/health"

  credentials() {
    "$TANDEM" dev-credentials --config "$dir/tandem.toml" --data-dir "$dir/data" "$@"
  }
  admin=$(credentials --admin)
  customer=$(credentials --sub "$CUSTOMER_ID" --username customer000001)
  export BENCH_API_KEY BENCH_ADMIN_TOKEN BENCH_CUSTOMER_TOKEN BENCH_IDS BENCH_SECRET \
    BENCH_LIST_LIMIT BENCH_RUN_ID
  BENCH_API_KEY=$(sed -n 's/^API-Key: //p' <<<"$admin")
  BENCH_ADMIN_TOKEN=$(sed -n 's/^Authorization: Bearer //p' <<<"$admin")
  BENCH_CUSTOMER_TOKEN=$(sed -n 's/^Authorization: Bearer //p' <<<"$customer")
  BENCH_IDS="$dir/ids"
  BENCH_SECRET=$SECRET
  BENCH_LIST_LIMIT=$LIST_LIMIT
  BENCH_RUN_ID="$(date +%s)$backend"

  # Creates and resends queue emails faster than dev mode's delivery writes them out (after a
  # 10 s run of invitation creates, delivery took 7-17 s more), so each run waits for the queue
  # to empty first: a row then measures its own operation, not the delivery of an earlier one's
  # mail.
  drain_mail() {
    local waiting first="" started=$SECONDS
    for _ in $(seq 1 240); do
      waiting=$("$TANDEM" mail-queue --config "$dir/tandem.toml" --data-dir "$dir/data" --limit 0 |
        awk 'NR == 1 { print $1 }')
      if [[ "$waiting" == 0 ]]; then
        if [[ -n "$first" ]]; then
          echo "  ($first queued emails delivered in $((SECONDS - started)) s before the next run)" >&2
        fi
        return 0
      fi
      first=${first:-$waiting}
      sleep 0.5
    done
    echo "  WARNING: $waiting of $first queued emails still undelivered after 120 s; measuring anyway" >&2
  }
  measure() { # BACKEND OP SCRIPT [THREADS CONNECTIONS PAUSE_MS]: run_wrk on an empty mail queue
    drain_mail
    run_wrk "$1" "$2" "$3" "$base" "$DURATION" "${@:4}"
  }

  echo "-- warming up ($WARMUP per read operation)" >&2
  for script in get-connection get-invitation list-invitations-customer list-connections; do
    run_wrk warmup "$script" "$script" "$base" "$WARMUP"
  done

  echo "-- measuring ($DURATION each, -t$THREADS -c$CONNECTIONS)" >&2
  # Reads, then creates, then the actions and verification, which use up seeded ids. The
  # customer's list is measured before the creates, which add to customer 1's invitations, and
  # again after them. The
  # staff list goes last: when it is slow, requests still running after wrk stops would slow
  # whatever came next.
  paced() { # SCRIPT: latency under a steady load below saturation (with 32 clients on 2 cores a
    # list's p99 is mostly time spent queued behind the other 31)
    measure "$backend" "$1-paced" "$1" 2 "$PACED_CLIENTS" "$PACED_PAUSE_MS"
  }
  for script in get-connection get-invitation list-connections list-invitations-customer; do
    measure "$backend" "$script" "$script"
  done
  # The gets again with wrk's other scheduling policy: with wrk at normal priority, each answer
  # that wakes it preempts the server, which costs a slower server more (see the README).
  for script in get-connection get-invitation; do
    SCHED=$OTHER_SCHED measure "$backend" "$script-wrk-$OTHER_SCHED" "$script"
  done
  paced list-invitations-customer
  for script in create-connection create-invitation; do
    measure "$backend" "$script" "$script"
  done
  # The creates were customer 1's: its list again, now over tens of thousands of its own.
  measure "$backend" list-invitations-customer-grown list-invitations-customer
  for script in connection-inactive connection-failed connection-active invitation-revoke \
    invitation-resend invitation-complete verify list-invitations-staff; do
    measure "$backend" "$script" "$script"
  done
  # The staff list once more one request at a time: its latency without queueing behind others.
  measure "$backend" list-invitations-staff-c1 list-invitations-staff 1 1
  paced list-invitations-staff
  echo "$backend peak_rss_mb $(peak_rss_mb "$SERVER_PID")" >>"$RESULTS"
  stop_server
  if [[ "$backend" == postgres ]]; then
    psql "$PG_ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $PG_DATABASE"
  fi
done

# ---- The table -----------------------------------------------------------------------------
echo
echo "tandem load benchmark: wrk -t$THREADS -c$CONNECTIONS -d$DURATION per operation;" \
  "$AUDIENCE_CONNECTIONS audience connections, $INVITATIONS invitations over $CUSTOMERS customers."
echo "Server: release build, dev mode with bearer tokens and API key checked on every request;" \
  "API rate limit off (rate_limit.per_second = 0); verification limit per address 1e9;" \
  "sync engine off; email to dev-mode .eml files (on)."
echo "Machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end;" \
  "wrk runs on the same machine, as SCHED_${WRK_SCHED^^}" \
  "except in the -wrk-$OTHER_SCHED rows."
echo
awk -v other_sched="$OTHER_SCHED" -v limit="$LIST_LIMIT" -v clients="$CONNECTIONS" -v paced="$PACED_CLIENTS" -v pause="$PACED_PAUSE_MS" '
  function field(name,   i) {
    for (i = 2; i <= NF; i++) if (index($i, name "=") == 1) return substr($i, length(name) + 2)
    return ""
  }
  $1 == "baseline" { hello[field("op")] = field("rps") + 0; next }
  $2 == "peak_rss_mb" { rss[$1] = $3 + 0; backends[++n_backends] = $1; next }
  { rows[++n] = $0 }
  END {
    print "| backend | operation | req/s | p50 ms | p99 ms | non-2xx | ratio to hello | notes |"
    print "|---|---|---:|---:|---:|---:|---:|---|"
    shown = ""
    for (i = 1; i <= n; i++) {
      $0 = rows[i]
      b = $1; op = field("op"); rps = field("rps") + 0; p99 = field("p99_ms") + 0
      if (index(shown, " " b " ") == 0) {
        printf "| %s | axum hello-world (no auth, no database) | %.0f | | | | 1.000 | measured just before %s |\n", b, hello[b], b
        shown = shown " " b " "
      }
      notes = ""
      if (field("requests") + 0 == 0) notes = notes "no request completed within the run; "
      if (field("socket_errors") + 0 > 0) notes = notes field("socket_errors") " socket errors or timeouts; "
      if (field("beyond_pool") + 0 > 0) notes = notes field("beyond_pool") " requests repeated an id (seeded ids used up); "
      if (op == "list-connections") notes = notes "state=active, limit=" limit "; "
      if (op ~ /-c1$/) notes = notes "wrk -t1 -c1: one request at a time; "
      if (op ~ /^pgbench-/) notes = notes "PostgreSQL alone (pgbench -M prepared, same clients; no HTTP, no tandem): "
      if (op == "pgbench-select-1") notes = notes "SELECT 1; "
      if (op == "pgbench-get-invitation") notes = notes "the get-invitation'"'"'s statement; "
      if (op ~ /^pgbench-list-invitations-/) {
        list = op
        sub(/^pgbench-list-invitations-/, "", list)
        notes = notes "the " list " list'"'"'s two statements (page and count); "
      }
      if (field("mean_ms") != "") notes = notes "mean latency " sprintf("%.2f", field("mean_ms")) " ms; "
      if (op ~ /-paced$/) notes = notes paced " clients, each pausing " pause " ms after every answer; "
      if (op ~ /-grown$/) notes = notes "after create-invitation, whose invitations are all customer 1'"'"'s; "
      if (op ~ /^list-invitations/) notes = notes "filter=eq(state,sent), first page of 100 (count given up to 1000 matches); "
      # A row measured with the other policy of wrk is compared with the baseline measured so too.
      base = hello[b]
      if (op ~ ("-wrk-" other_sched "$")) {
        base = hello[b "-wrk-" other_sched]
        notes = notes "wrk as SCHED_" toupper(other_sched) ", against hello-world so measured (" sprintf("%.0f", base) " req/s); "
      }
      ratio = base > 0 ? rps / base : 0
      p50_text = field("p50_ms") == "" ? "" : sprintf("%.2f", field("p50_ms"))
      p99_text = field("p99_ms") == "" ? "" : sprintf("%.2f", p99)
      printf "| %s | %s | %.0f | %s | %s | %d | %.3f | %s |\n", b, op, rps, p50_text, p99_text, field("non2xx"), ratio, notes
      result[b, op, "ratio"] = ratio
      result[b, op, "rps"] = rps
      result[b, op, "p99"] = p99
      result[b, op, "done"] = field("requests") + 0
      result[b, op, "mean"] = field("mean_ms") + 0
    }
    for (i = 1; i <= n_backends; i++) printf "| %s | server peak RSS (VmHWM) | | | | | | %.1f MB |\n", backends[i], rss[backends[i]]
    print ""
    print "Targets:"
    for (i = 1; i <= n_backends; i++) {
      b = backends[i]
      split("get-connection get-invitation", ops, " ")
      for (k = 1; k <= 2; k++) {
        other = ops[k] "-wrk-" other_sched
        printf "- %s %s: ratio to hello-world %.3f >= 0.40 with auth: %s", b, ops[k], result[b, ops[k], "ratio"], (result[b, ops[k], "ratio"] >= 0.40) ? "met" : "NOT MET"
        if (result[b, other, "done"] > 0) printf " (with wrk as SCHED_%s: %.3f)", toupper(other_sched), result[b, other, "ratio"]
        if (result[b, "pgbench-select-1", "done"] > 0) printf "; PostgreSQL alone answers SELECT 1 at %.3f", result[b, "pgbench-select-1", "ratio"]
        if (result[b, "pgbench-" ops[k], "done"] > 0) printf " and this get'"'"'s statement at %.3f", result[b, "pgbench-" ops[k], "ratio"]
        printf "\n"
      }
      split("list-invitations-customer list-invitations-staff", ops, " ")
      for (k = 1; k <= 2; k++) {
        if (result[b, ops[k], "done"] == 0) printf "- %s %s: p99 < 10 ms: NOT MET (no request completed)\n", b, ops[k]
        else {
          printf "- %s %s: p99 %.2f ms < 10 ms with %d clients: %s", b, ops[k], result[b, ops[k], "p99"], clients, (result[b, ops[k], "p99"] < 10) ? "met" : "NOT MET"
          alone = "pgbench-" ops[k]
          if (result[b, alone, "done"] > 0) printf "; PostgreSQL alone on its statements with the same clients: %.0f req/s, mean latency %.2f ms", result[b, alone, "rps"], result[b, alone, "mean"]
          printf "\n"
        }
        paced_op = ops[k] "-paced"
        if (result[b, paced_op, "done"] > 0) printf "- %s %s: p99 %.2f ms < 10 ms at %.0f req/s (%d clients pausing %d ms): %s\n", b, ops[k], result[b, paced_op, "p99"], result[b, paced_op, "rps"], paced, pause, (result[b, paced_op, "p99"] < 10) ? "met" : "NOT MET"
      }
      if (b == "sqlite") {
        split("create-connection create-invitation", ops, " ")
        for (k = 1; k <= 2; k++) printf "- %s %s: %.0f req/s >= 5000: %s\n", b, ops[k], result[b, ops[k], "rps"], (result[b, ops[k], "rps"] >= 5000) ? "met" : "NOT MET"
      }
      printf "- %s server peak RSS %.1f MB < 100 MB: %s\n", b, rss[b], (rss[b] < 100) ? "met" : "NOT MET"
    }
  }
' "$RESULTS"
echo
echo "(raw results: $RESULTS; server logs: $WORK/<backend>/server.log)"
