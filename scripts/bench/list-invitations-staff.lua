-- getInvitations?filter=eq(state,sent) as staff: over all seeded invitations, first page
-- (default size 100), with the count (given up to 1000 matches).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local bench = require("common")

function request()
  return wrk.format("GET", "/invitations/invitations?filter=eq(state,sent)",
    bench.headers("admin"))
end
