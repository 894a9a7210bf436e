-- Record how one claimed callback went: $4 'delivered', 'retry' (due again at $5) or 'given_up'; $6 the
-- failure (kept as the last error). Guarded by the claim ($2 lease, $3 attempts): a worker whose lease ended
-- and whose row was claimed again meanwhile changes nothing.
UPDATE tidings.callback_outbox
   SET lease_id = NULL,
       delivered_at = CASE WHEN $4 = 'delivered' THEN now() END,
       given_up_at = CASE WHEN $4 = 'given_up' THEN now() END,
       run_at = coalesce($5, run_at),
       last_error = coalesce($6, last_error)
 WHERE id = $1
   AND lease_id = $2
   AND attempts = $3
   AND delivered_at IS NULL
   AND given_up_at IS NULL
