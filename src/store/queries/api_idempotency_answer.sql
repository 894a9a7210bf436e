-- Records the ids answered for Idempotency-Key $2 of token $1, in the transaction that enqueued them.
UPDATE tidings.api_idempotency SET ids = $3 WHERE token_name = $1 AND idem_key = $2
