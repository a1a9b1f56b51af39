-- revokeInvitation as staff, each request on a different seeded invitation it applies to (from
-- invitations-to-revoke.txt), so every request is a real change.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local bench = require("common")
local pool

function init(args)
  pool = bench.ids("invitations-to-revoke.txt", true)
end

function request()
  return wrk.format("POST", "/invitations/revoked?invitation=" .. bench.next_id(pool),
    bench.headers("admin"))
end
