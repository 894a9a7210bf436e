-- wrk script: POST /v1/messages/batch of 1000 messages (the same message as single.lua).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TIDINGS_TOKEN_BENCH")
local one = '{"channel":"sms","recipient":{"phone":"+31612345678"},"content":{"body":{"type":"text","text":{"text":"Your code is 123456"}}}}'
local parts = {}
for i = 1, 1000 do parts[i] = one end
wrk.body = '{"messages":[' .. table.concat(parts, ",") .. ']}'
