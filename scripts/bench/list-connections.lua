-- listCustomerAudienceConnections?state=active as staff; BENCH_LIST_LIMIT items per page.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local bench = require("common")
local path = "/bankingAdmin/customerAudienceConnections?state=active&limit="
  .. bench.env("BENCH_LIST_LIMIT")

function request()
  return wrk.format("GET", path, bench.headers("admin"))
end
