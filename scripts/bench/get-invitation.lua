-- getInvitation by its owner (customer 1), over the invitations customer 1 created.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local bench = require("common")
local pool

function init(args)
  pool = bench.ids("invitations-of-customer-1.txt", false)
end

function request()
  return wrk.format("GET", "/invitations/invitations/" .. bench.next_id(pool),
    bench.headers("customer"))
end
