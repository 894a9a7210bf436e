-- Takes Idempotency-Key $2 of token $1 for body hash $3, or finds it taken. Returns a row when this transaction
-- now holds the key: a new key, or one older than 24 h (expired answers are replaced, never replayed). A
-- concurrent transaction holding the same key makes this statement wait on the primary key until it ends; then
-- ON CONFLICT sees its committed row (no row returned: read it with api_idempotency_get.sql) or, after a rollback,
-- inserts.
INSERT INTO tidings.api_idempotency AS k (token_name, idem_key, body_hash)
VALUES ($1, $2, $3)
ON CONFLICT (token_name, idem_key) DO UPDATE
   SET body_hash = excluded.body_hash, ids = NULL, created_at = now()
 WHERE k.created_at < now() - interval '24 hours'
RETURNING true
