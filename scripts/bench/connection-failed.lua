-- The /failed action as staff, each request on a different seeded connection it applies to
-- (from connections-to-failed.txt), so every request is a real state change.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local bench = require("common")
local pool

function init(args)
  pool = bench.ids("connections-to-failed.txt", true)
end

function request()
  return wrk.format("POST", "/bankingAdmin/customerAudienceConnections/" .. bench.next_id(pool)
    .. "/failed", bench.headers("admin"))
end
