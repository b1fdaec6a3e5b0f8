-- wrk script: POST a fixed JSON body with a bearer key, like an OpenAI client.
-- The body file and the key come from the environment so that one script
-- serves every target and scenario (bench/run.py sets them).
local body_path = assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set")
local key = assert(os.getenv("BENCH_KEY"), "BENCH_KEY is not set")

local f = assert(io.open(body_path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
