-- Hand back the callbacks a stopping worker still holds under lease $1: due at once for another worker.
UPDATE tidings.callback_outbox
   SET lease_id = NULL, run_at = now()
 WHERE lease_id = $1
   AND delivered_at IS NULL
   AND given_up_at IS NULL
