-- The stored answer of Idempotency-Key $2 of token $1: the first call's body hash and the ids it answered.
SELECT body_hash, ids
  FROM tidings.api_idempotency
 WHERE token_name = $1 AND idem_key = $2
