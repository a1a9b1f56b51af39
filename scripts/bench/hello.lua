-- The axum hello-world baseline: wrk's default GET of the URL, reported like the others.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
require("common")
