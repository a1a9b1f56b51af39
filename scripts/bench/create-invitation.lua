-- createInvitation by customer 1: a joint invitation on the account it owns (the handler checks
-- the entitlement and the account's joint-owner setting, seals the secret, queues the email).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local bench = require("common")

function request()
  local body = string.format(
    '{"type":"joint","emailAddress":"invitee-%s@example.com","accountUri":"/banking/accounts/acct-000001",'
      .. '"inviterFullName":"Casey Customer","firstName":"Robin","lastName":"Rivera",'
      .. '"sharedSecret":"a shared secret for the benchmark"}',
    bench.unique())
  return wrk.format("POST", "/invitations/invitations", bench.headers("customer", bench.json), body)
end
