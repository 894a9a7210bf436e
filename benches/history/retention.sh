#!/usr/bin/env bash
# Retention of one day of N messages (3 events each): dropping the day's partitions of the history (tidings today)
# against the DELETE-based pruner that tidings ran before migration 0014 (its statement, 1000 messages per batch,
# on the same rows in the hot tables). Prints the database time of each.
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres TIDINGS=target/release/tidings benches/history/retention.sh [N]
set -euo pipefail
n=${1:-1000000}
base=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db=tidings_retention_bench
tidings=${TIDINGS:-target/release/tidings}
psql -qX "$base" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
url="${base%/*}/$db"
DATABASE_URL=$url "$tidings" migrate >/dev/null
q() { psql -qX -v ON_ERROR_STOP=1 "$url" "$@"; }

# One day, ten days ago, of N finished messages with three events each: in the history (partitions) and, the same
# rows, in the hot tables (as before 0014).
fill() { # $1 messages table, $2 events table
  q -v n="$n" <<SQL
INSERT INTO tidings.$1 (id, channel, recipient, content, use_case, status, run_at, expires_at, max_attempts, attempts,
                        provider_message_id, created_at, updated_at)
SELECT tidings.uuid_v7(t), 'sms', jsonb_build_object('phone', '+3161' || lpad(i::text, 7, '0')),
       '{"type": "text", "text": {"text": "Your code is 123456"}}', 'transactional', 'delivered', t,
       t + interval '36 hours', 10, 1, 'p-' || i, t, t + interval '3 seconds'
  FROM generate_series(1, :n) i,
       LATERAL (SELECT date_trunc('day', now() - interval '10 days') + i * interval '1 day' / (:n + 1) AS t) x;
INSERT INTO tidings.$2 (id, message_id, at, status, reason, attempt) OVERRIDING SYSTEM VALUE
SELECT nextval(pg_get_serial_sequence('tidings.message_events', 'id')), m.id, m.created_at + k * interval '1 second',
       (ARRAY['accepted', 'sent', 'delivered']::tidings.message_status[])[k],
       (ARRAY['enqueued', 'provider_accepted', 'receipt_delivered'])[k], k - 1
  FROM tidings.$1 m, generate_series(1, 3) k;
VACUUM ANALYZE tidings.$1; VACUUM ANALYZE tidings.$2;
SQL
}
q -c "SELECT count(*) FROM tidings.history_partitions(interval '100 years', 3, (now() - interval '11 days')::date)" >/dev/null
fill message_history message_event_history
echo "history: $(q -tAc "SELECT count(*) FROM tidings.message_history") messages, $(q -tAc "SELECT count(*) FROM tidings.message_event_history") events"
start=$(date +%s.%N)
dropped=$(q -tAc "SELECT count(*) FROM tidings.history_partitions(interval '7 days') WHERE action = 'dropped'")
end=$(date +%s.%N)
echo "partitions: dropped $dropped day(s) in $(echo "$end - $start" | bc) s (left: $(q -tAc "SELECT count(*) FROM tidings.message_history") messages)"

# The same rows in the hot tables, removed by the pre-0014 pruner statement, batch after batch.
fill messages message_events
cat > /tmp/retention-prune.sql <<'SQL'
WITH old AS (
    SELECT id FROM tidings.messages
     WHERE id < (SELECT tidings.uuid_v7(now() - interval '7 days'))
       AND status IN ('sent', 'delivered', 'delivery_failed', 'sending_failed', 'rejected', 'expired', 'canceled')
       AND updated_at < now() - interval '7 days'
     ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM tidings.messages m WHERE m.id = ANY (ARRAY(SELECT id FROM old)) RETURNING m.id
), events AS (
    DELETE FROM tidings.message_events e WHERE e.message_id = ANY (ARRAY(SELECT id FROM gone))
)
SELECT count(*) FROM gone
SQL
start=$(date +%s.%N)
batches=0
while [ "$(q -tA -f /tmp/retention-prune.sql)" != "0" ]; do batches=$((batches + 1)); done
end=$(date +%s.%N)
echo "DELETE pruner: $batches batches in $(echo "$end - $start" | bc) s (left: $(q -tAc "SELECT count(*) FROM tidings.messages") messages)"
psql -qX "$base" -c "DROP DATABASE $db"
