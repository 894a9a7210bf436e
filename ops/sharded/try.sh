#!/usr/bin/env bash
# Runs the worked sharding example of docs/sharding.md for real, on one PostgreSQL server: two scratch databases
# (tidings_shard_a, tidings_shard_b), each migrated with its own config, one sandbox provider, one worker per
# shard; one message per channel, enqueued with psql into the database that owns the channel, must reach `sent`.
# Then the two rules that keep channels apart are shown to hold: a shard refuses a message for a channel of the
# other shard, and a fallback step naming a channel of the other shard. The databases are dropped at the end.
#
#   ops/sharded/try.sh                         # uses `tidings` from PATH
#   TIDINGS=target/release/tidings ops/sharded/try.sh
#   PGURL=postgres://postgres@db.example:5432 ops/sharded/try.sh
#
# Exits 0 when everything above held, 1 otherwise.
set -euo pipefail

TIDINGS=${TIDINGS:-tidings}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
HERE=$(cd "$(dirname "$0")" && pwd)
A="$PGURL/tidings_shard_a"
B="$PGURL/tidings_shard_b"
LOGS=$(mktemp -d)
PIDS=()

cleanup() {
    # SIGTERM, last started first: the workers drain and exit before the sandbox goes; then the databases.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill "${PIDS[$i]}" 2>/dev/null || true
        wait "${PIDS[$i]}" 2>/dev/null || true
    done
    psql -qX "$PGURL/postgres" -c 'DROP DATABASE IF EXISTS tidings_shard_a' -c 'DROP DATABASE IF EXISTS tidings_shard_b'
    echo "logs: $LOGS"
}
trap cleanup EXIT

q() { psql -qXAt -v ON_ERROR_STOP=1 -v VERBOSITY=terse "$@"; }

echo "== two databases, each migrated with its own shard's config"
psql -qX "$PGURL/postgres" -c 'SET client_min_messages = warning' \
    -c 'DROP DATABASE IF EXISTS tidings_shard_a' -c 'DROP DATABASE IF EXISTS tidings_shard_b' \
    -c 'CREATE DATABASE tidings_shard_a' -c 'CREATE DATABASE tidings_shard_b'
DATABASE_URL=$A "$TIDINGS" migrate --config "$HERE/shard-a.toml"
DATABASE_URL=$B "$TIDINGS" migrate --config "$HERE/shard-b.toml"
echo "shard A knows: $(q "$A" -c 'SELECT string_agg(name, $$, $$ ORDER BY name) FROM tidings.channels')"
echo "shard B knows: $(q "$B" -c 'SELECT string_agg(name, $$, $$ ORDER BY name) FROM tidings.channels')"

echo "== one sandbox provider, one worker per shard"
"$TIDINGS" sandbox --listen 127.0.0.1:18181 >"$LOGS/sandbox.log" 2>&1 &
PIDS+=($!)
DATABASE_URL=$A "$TIDINGS" worker --config "$HERE/shard-a.toml" >"$LOGS/worker-a.log" 2>&1 &
PIDS+=($!)
DATABASE_URL=$B "$TIDINGS" worker --config "$HERE/shard-b.toml" >"$LOGS/worker-b.log" 2>&1 &
PIDS+=($!)
for port in 19464 19465; do
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
        sleep 0.1
    done
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { echo "worker on :$port never became ready"; exit 1; }
done

echo "== one message per channel, into the database that owns the channel"
BODY='{"body": {"type": "text", "text": {"text": "Your code is 424242"}}}'
ID_SMS=$(q "$A" -c "SELECT tidings.enqueue(channel => 'sms', recipient => '{\"phone\": \"+31612345678\"}', content => '$BODY')")
ID_BACKUP=$(q "$A" -c "SELECT tidings.enqueue(channel => 'sms-backup', recipient => '{\"phone\": \"+31612345678\"}', content => '$BODY')")
ID_MKT=$(q "$B" -c "SELECT tidings.enqueue(channel => 'sms-marketing', recipient => '{\"phone\": \"+31612345678\"}',
    content => '{\"body\": {\"type\": \"text\", \"text\": {\"text\": \"Spring sale: 20% off\"}}}',
    use_case => 'marketing', cap_frequency => true, ignore_quiet_hours => true)")

status() { q "$1" -c "SELECT status FROM tidings.messages WHERE id = '$2'"; }
for _ in $(seq 100); do
    [ "$(status "$A" "$ID_SMS")" = sent ] && [ "$(status "$A" "$ID_BACKUP")" = sent ] &&
        [ "$(status "$B" "$ID_MKT")" = sent ] && break
    sleep 0.1
done
q "$A" -c "SELECT 'shard A', channel, id, status FROM tidings.messages ORDER BY channel" | tr '|' ' '
q "$B" -c "SELECT 'shard B', channel, id, status FROM tidings.messages ORDER BY channel" | tr '|' ' '
ok=true
for pair in "$A $ID_SMS" "$A $ID_BACKUP" "$B $ID_MKT"; do
    set -- $pair
    [ "$(status "$1" "$2")" = sent ] || { echo "FAIL: $2 is $(status "$1" "$2"), not sent"; ok=false; }
done

echo "== one maintenance leader per shard (the leader lock is an advisory lock, scoped to its database)"
for shard in a b; do
    for _ in $(seq 100); do
        grep -q "now runs the fleet's maintenance" "$LOGS/worker-$shard.log" && break
        sleep 0.1
    done
    if grep -q "now runs the fleet's maintenance" "$LOGS/worker-$shard.log"; then
        echo "shard ${shard^^}: its worker is the leader"
    else
        echo "FAIL: shard ${shard^^}'s worker never became leader"; ok=false
    fi
done

echo "== a shard refuses a channel it does not own"
if out=$(q "$A" -c "SELECT tidings.enqueue(channel => 'sms-marketing', recipient => '{\"phone\": \"+31612345678\"}', content => '$BODY')" 2>&1); then
    echo "FAIL: shard A accepted a message for sms-marketing: $out"; ok=false
else
    echo "shard A: $out"
fi

echo "== a fallback chain stays in its shard"
if out=$(q "$A" -c "SELECT tidings.enqueue(channel => 'sms', recipient => '{\"phone\": \"+31612345678\"}', content => '$BODY',
        fallback => '[{\"channel\": \"sms-marketing\", \"content\": $BODY, \"on\": [\"sending_failed\"]}]')" 2>&1); then
    echo "FAIL: shard A accepted a fallback step on sms-marketing: $out"; ok=false
else
    echo "shard A: $out"
fi
if id=$(q "$A" -c "SELECT tidings.enqueue(channel => 'sms', recipient => '{\"phone\": \"+31612345678\"}', content => '$BODY',
        fallback => '[{\"channel\": \"sms-backup\", \"content\": $BODY, \"on\": [\"sending_failed\"]}]')"); then
    echo "shard A: a fallback step on sms-backup (same shard) is accepted: $id"
else
    ok=false
fi

echo "== a channel the database knows but no worker serves: accepted, then stranded (the mistake to avoid)"
# Shard B's config synced into shard A's database by mistake: A now knows sms-marketing, A's workers do not serve it.
DATABASE_URL=$A "$TIDINGS" migrate --config "$HERE/shard-b.toml" >/dev/null
STRAY=$(q "$A" -c "SELECT tidings.enqueue(channel => 'sms-marketing', recipient => '{\"phone\": \"+31612345678\"}', content => '$BODY')")
echo "shard A accepted $STRAY; the stray check of docs/sharding.md finds it:"
q "$A" -c "SELECT channel, status, count(*) FROM tidings.messages
            WHERE status IN ('accepted', 'scheduled', 'processing') AND channel <> ALL ('{sms,sms-backup}')
            GROUP BY 1, 2" | tr '|' ' '
# A message of a served channel enqueued after it, once sent, shows a claim went past the stray one: the claim takes
# due messages in (priority, run_at) order, up to a thousand at a time, so it would have taken both.
AFTER=$(q "$A" -c "SELECT tidings.enqueue(channel => 'sms', recipient => '{\"phone\": \"+31612345678\"}', content => '$BODY')")
for _ in $(seq 100); do [ "$(status "$A" "$AFTER")" = sent ] && break; sleep 0.1; done
echo "later sms message: $(status "$A" "$AFTER"); the sms-marketing one: $(status "$A" "$STRAY")"
[ "$(status "$A" "$AFTER")" = sent ] && [ "$(status "$A" "$STRAY")" = accepted ] ||
    { echo "FAIL: expected the later sms message sent and the stray one still accepted"; ok=false; }
# The clean-up of a move's last step: forget the channel, so that shard A refuses it again.
q "$A" -c "DELETE FROM tidings.messages WHERE id = '$STRAY'" -c "DELETE FROM tidings.channels WHERE name = 'sms-marketing'"
if out=$(q "$A" -c "SELECT tidings.enqueue(channel => 'sms-marketing', recipient => '{\"phone\": \"+31612345678\"}', content => '$BODY')" 2>&1); then
    echo "FAIL: shard A still accepts sms-marketing: $out"; ok=false
else
    echo "after DELETE FROM tidings.channels, shard A: $out"
fi

$ok && echo "== all held" || { echo "== FAILED"; exit 1; }
