#!/usr/bin/env bash
# Builds the 10-million-message database the README's "With 10 million messages" table was measured on:
# 20 days x 500k messages and their ~28M events, then migrates and analyzes it.
# Usage: DATABASE_URL=postgres://postgres@127.0.0.1/tidings_10m benches/scale/fill.sh path/to/tidings
# Then: start `tidings worker` once (it rolls the events up, ~1 min) and `tidings serve`, both with
# benches/scale/tidings.toml and TIDINGS_TOKEN_OPS set, and run benches/scale/list.sh. Takes ~15 min and ~9 GB.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../target/release/tidings}
"$bin" migrate --config "$here/tidings.toml"
for b in 0 1 2 3 4 5 6 7 8 9; do
  psql "$DATABASE_URL" -q -v batch=$b -f "$here/fill.sql"; echo "messages: batch $b of 9"
done
for d in $(seq 20 -1 0); do
  psql "$DATABASE_URL" -q -v lo=$((d-1)) -v hi=$d -f "$here/fill_events.sql"; echo "events: day $d"
done
psql "$DATABASE_URL" -qc "VACUUM ANALYZE tidings.messages" -c "VACUUM ANALYZE tidings.message_events" \
  -c "VACUUM ANALYZE tidings.message_recipients"
