-- createCustomerAudienceConnection as staff, a new audience id per request.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local bench = require("common")

function request()
  local body = string.format(
    '{"audience":{"id":"bench-%s","name":"Benchmark audience"},"provider":{"name":"file"}}',
    bench.unique())
  return wrk.format("POST", "/bankingAdmin/customerAudienceConnections",
    bench.headers("admin", bench.json), body)
end
