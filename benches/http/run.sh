#!/usr/bin/env bash
# HTTP enqueue throughput beside the SQL rate, in one run on one machine (issue 14, item 7):
#   1. one message per POST /v1/messages, 64 keep-alive connections (wrk);
#   2. POST /v1/messages/batch of 1000, 4 connections (wrk);
#   3. the same 1000 messages through SELECT tidings.enqueue_many(...), 4 clients (pgbench).
# Usage: benches/http/run.sh [path/to/tidings]   (default: target/release/tidings; needs wrk and pgbench)
# Prints messages per second for each and the ratios the issue asks for.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../target/release/tidings}
secs=${SECS:-10}
pg=${PGURL:-postgres://postgres@127.0.0.1:5432}
db=tidings_http_bench
pgbench=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | tail -1)
work=$(mktemp -d)
trap 'kill $serve 2>/dev/null || true; rm -rf "$work"' EXIT

psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
export DATABASE_URL=$pg/$db TIDINGS_TOKEN_BENCH=bench-token-0123456789
cat > "$work/tidings.toml" <<TOML
[api]
listen = "127.0.0.1:18080"
max_connections = ${API_CONNECTIONS:-16}
[[api.tokens]]
name = "bench"
scope = "produce"
env = "TIDINGS_TOKEN_BENCH"
[channels.sms]
kind = "sandbox"
base_url = "http://127.0.0.1:9"
TOML
"$bin" migrate --config "$work/tidings.toml" >/dev/null
RUST_LOG=warn "$bin" serve --config "$work/tidings.toml" >"$work/serve.log" 2>&1 &
serve=$!
for _ in $(seq 100); do curl -fs http://127.0.0.1:18080/v1/openapi.json >/dev/null 2>&1 && break; sleep 0.1; done

rate() { # wrk's Requests/sec line → number
  awk '/Requests\/sec/ {print $2}'
}
count() { psql "$DATABASE_URL" -tAc "SELECT count(*) FROM tidings.messages"; }

before=$(count)
single_rps=$(wrk -t2 -c64 -d${secs}s -s "$here/single.lua" http://127.0.0.1:18080/v1/messages | tee "$work/single.txt" | rate)
single_rows=$(( $(count) - before ))
before=$(count)
batch_rps=$(wrk -t2 -c4 -d${secs}s -s "$here/batch.lua" http://127.0.0.1:18080/v1/messages/batch | tee "$work/batch.txt" | rate)
batch_rows=$(( $(count) - before ))

# The same 1000 messages as one SQL call, the way a producer with a connection sends them.
python3 - "$work/sql.pgb" <<'PY'
import json, sys
one = {"channel": "sms", "recipient": {"phone": "+31612345678"},
       "content": {"body": {"type": "text", "text": {"text": "Your code is 123456"}}}}
with open(sys.argv[1], "w") as f:
    f.write("SELECT count(*) FROM tidings.enqueue_many('%s'::jsonb);\n" % json.dumps([one] * 1000))
PY
before=$(count)
sql_tps=$("$pgbench" -n -c4 -j2 -T "$secs" -f "$work/sql.pgb" "$DATABASE_URL" | awk '/^tps/ {print $3}')
sql_rows=$(( $(count) - before ))

grep -q "Non-2xx" "$work/single.txt" "$work/batch.txt" && { echo "non-2xx answers:"; cat "$work"/*.txt; exit 1; }
python3 - "$single_rps" "$batch_rps" "$sql_tps" "$single_rows" "$batch_rows" "$sql_rows" "$secs" <<'PY'
import sys
single, batch, sql = (float(x) for x in sys.argv[1:4])
rows = [int(x) for x in sys.argv[4:7]]
secs = float(sys.argv[7])
print(f"POST /v1/messages, 64 connections:        {single:9.0f} messages/s  ({rows[0]} rows in {secs:.0f} s)")
print(f"POST /v1/messages/batch of 1000, 4 conns: {batch * 1000:9.0f} messages/s  ({rows[1]} rows)")
print(f"SQL enqueue_many of 1000, 4 clients:      {sql * 1000:9.0f} messages/s  ({rows[2]} rows)")
print(f"batch over HTTP / SQL: {batch / sql:.2f}   (issue 14 asks >= 0.50)")
PY
