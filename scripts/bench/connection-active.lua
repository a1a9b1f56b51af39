-- The /active action as staff, each request on a different seeded connection it applies to
-- (from connections-to-active.txt), so every request is a real state change.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local bench = require("common")
local pool

function init(args)
  pool = bench.ids("connections-to-active.txt", true)
end

function request()
  return wrk.format("POST", "/bankingAdmin/customerAudienceConnections/" .. bench.next_id(pool)
    .. "/active", bench.headers("admin"))
end
