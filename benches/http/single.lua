-- wrk script: one message per POST /v1/messages (keep-alive), as a producer's service sends them.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TIDINGS_TOKEN_BENCH")
wrk.body = '{"channel":"sms","recipient":{"phone":"+31612345678"},"content":{"body":{"type":"text","text":{"text":"Your code is 123456"}}}}'
