-- getCustomerAudienceConnection as staff, over a spread-out sample of the seeded connections.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local bench = require("common")
local pool

function init(args)
  pool = bench.ids("connections.txt", false)
end

function request()
  return wrk.format("GET", "/bankingAdmin/customerAudienceConnections/" .. bench.next_id(pool),
    bench.headers("admin"))
end
