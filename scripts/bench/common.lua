-- Shared by the wrk scripts of scripts/bench.sh. The script reads its settings from the
-- environment:
--   BENCH_OP        the operation's name in the results table
--   BENCH_IDS       the directory of id lists written by examples/bench_seed.rs
--   BENCH_THREADS   wrk's -t, so each thread takes its own share of an id list
--   BENCH_API_KEY, BENCH_ADMIN_TOKEN, BENCH_CUSTOMER_TOKEN   credentials
-- and prints one machine-readable line from done():
--   BENCH_RESULT op=... requests=... rps=... p50_ms=... p99_ms=... non2xx=... socket_errors=...
--   beyond_pool=...
-- `beyond_pool` counts requests made after a thread used up its share of a list of one-shot
-- ids (e.g. invitations to revoke): those repeat an id, so they are no longer real transitions.

local M = {}

local threads = {}
local next_thread = 0

-- wrk calls setup() in the main Lua state once per thread, before the run.
function setup(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

function M.env(name)
  local value = os.getenv(name)
  if value == nil or value == "" then
    error("the environment variable " .. name .. " is not set")
  end
  return value
end

-- This thread's share of an id list: every n-th line from its own offset.
-- `one_shot` lists count how far they were used (reported as beyond_pool).
function M.ids(name, one_shot)
  local path = M.env("BENCH_IDS") .. "/" .. name
  local file = assert(io.open(path, "r"))
  local threads_total = tonumber(M.env("BENCH_THREADS"))
  local offset = thread_index or 0
  local ids, line_number = {}, 0
  for line in file:lines() do
    if line_number % threads_total == offset then
      ids[#ids + 1] = line
    end
    line_number = line_number + 1
  end
  file:close()
  if #ids == 0 then
    error(path .. " has no ids for thread " .. offset)
  end
  local pool = { ids = ids, position = 0, one_shot = one_shot }
  if one_shot then
    pool_size = #ids
    used = 0
  end
  return pool
end

function M.next_id(pool)
  pool.position = pool.position + 1
  if pool.one_shot then
    used = pool.position
  end
  return pool.ids[(pool.position - 1) % #pool.ids + 1]
end

-- Request headers for "admin" (staff), "customer" (customer 1) or nil (no credentials).
function M.headers(who, extra)
  local headers = {}
  if who ~= nil then
    headers["API-Key"] = M.env("BENCH_API_KEY")
    local token = who == "admin" and M.env("BENCH_ADMIN_TOKEN") or M.env("BENCH_CUSTOMER_TOKEN")
    headers["Authorization"] = "Bearer " .. token
  end
  for k, v in pairs(extra or {}) do
    headers[k] = v
  end
  return headers
end

M.json = { ["Content-Type"] = "application/json" }

-- BENCH_PAUSE_MS: each connection waits that long after an answer before its next request
-- (wrk calls a global delay() before each request), for latency at a steady load.
local pause_ms = tonumber(os.getenv("BENCH_PAUSE_MS") or "")
if pause_ms ~= nil then
  function delay()
    return pause_ms
  end
end

-- A counter per thread, for unique values in created resources.
local counter = 0
function M.unique()
  counter = counter + 1
  return string.format("%s-%d-%d", M.env("BENCH_RUN_ID"), thread_index or 0, counter)
end

function done(summary, latency, requests)
  local beyond_pool = 0
  for _, thread in ipairs(threads) do
    local size, count = thread:get("pool_size"), thread:get("used")
    if size ~= nil and count ~= nil and count > size then
      beyond_pool = beyond_pool + (count - size)
    end
  end
  local errors = summary.errors
  io.write(string.format(
    "BENCH_RESULT op=%s requests=%d rps=%.1f p50_ms=%.3f p99_ms=%.3f non2xx=%d socket_errors=%d beyond_pool=%d\n",
    os.getenv("BENCH_OP") or "?", summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout, beyond_pool))
end

return M
