-- verifyInvitation with the correct secret (no credentials, as the invitee), each request on a
-- different seeded sent invitation, so each one is accepted once.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local bench = require("common")
local pool
local secret = bench.env("BENCH_SECRET")

function init(args)
  pool = bench.ids("invitations-to-verify.txt", true)
end

function request()
  local body = string.format('{"invitationId":"%s","sharedSecret":"%s"}', bench.next_id(pool), secret)
  return wrk.format("POST", "/invitations/verifications", bench.headers(nil, bench.json), body)
end
