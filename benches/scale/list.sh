#!/usr/bin/env bash
# First pages of GET /v1/messages on the 10M database, through the API (server time is what the API answers in;
# curl's time_total on loopback is within a millisecond of it). 20 runs each; prints p50 and p95 in ms.
# Usage: list.sh [base url] ; needs TIDINGS_TOKEN_OPS and a running `tidings serve`.
base=${1:-http://127.0.0.1:8090}
run() { # name, query
  local times=()
  for i in $(seq 20); do
    times+=($(curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $TIDINGS_TOKEN_OPS" "$base$2"))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v name="$1" '{a[NR]=$1*1000} END {printf "%-48s p50 %7.1f ms  p95 %7.1f ms\n", name, a[int(NR*0.5)], a[int(NR*0.95)]}'
}
cursor() { curl -s -H "Authorization: Bearer $TIDINGS_TOKEN_OPS" "$base$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next_cursor"] or "")'; }
run "no filter"                          "/v1/messages?limit=50"
run "channel=promo_sms"                  "/v1/messages?channel=promo_sms&limit=50"
run "status=sending_failed"              "/v1/messages?status=sending_failed&limit=50"
run "status=delivery_failed&channel=push" "/v1/messages?status=delivery_failed&channel=push&limit=50"
run "tag=rare-3"                         "/v1/messages?tag=rare-3&limit=50"
run "tag=campaign-7&channel=sms"         "/v1/messages?tag=campaign-7&channel=sms&limit=50"
run "use_case=2fa"                       "/v1/messages?use_case=2fa&limit=50"
run "recipient=+31600123456"             "/v1/messages?recipient=%2B31600123456&limit=50"
run "reference=order-4200000"            "/v1/messages?reference=order-4200000&limit=50"
run "provider_message_id"                "/v1/messages?provider_message_id=pm-$(echo -n 4200001 | md5sum | cut -c1-32)&limit=50"
run "created_before 10 days ago"         "/v1/messages?created_before=$(date -u -d '10 days ago' +%Y-%m-%dT%H:%M:%SZ)&limit=50"
c=$(cursor "/v1/messages?channel=whatsapp&limit=50")
run "channel=whatsapp, page 2"           "/v1/messages?channel=whatsapp&limit=50&cursor=$c"
c=$(cursor "/v1/messages?status=sending_failed&limit=50")
run "status=sending_failed, page 2"      "/v1/messages?status=sending_failed&limit=50&cursor=$c"
run "channel=promo_sms&use_case=2fa (none)" "/v1/messages?channel=promo_sms&use_case=2fa&limit=50"
run "GET /v1/stats"                      "/v1/stats"
run "GET /v1/channels"                   "/v1/channels"
run "GET /v1/stats/timeline?window=24h" "/v1/stats/timeline?window=24h"
run "GET /v1/stats/timeline?window=1h" "/v1/stats/timeline?window=1h"
