-- The callbacks of message $1, in transition order.
SELECT id, status::text AS status, url, attempts, at, delivered_at, given_up_at, last_error,
       (lease_id IS NOT NULL AND run_at > now()) AS in_flight, run_at
  FROM tidings.callback_outbox
 WHERE message_id = $1
 ORDER BY event_id
