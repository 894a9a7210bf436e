-- The events of the messages of one batch (created in [:lo, :hi) days ago), as the worker writes them: the
-- enqueue, the attempt's outcome, the receipt.
INSERT INTO tidings.message_events (message_id, at, status, reason, attempt, detail)
SELECT m.id, x.at, x.status, x.reason, x.attempt, x.detail
  FROM tidings.messages m
  CROSS JOIN LATERAL (VALUES
      (m.created_at, CASE WHEN m.status = 'scheduled' THEN 'scheduled' ELSE 'accepted' END::tidings.message_status, 'enqueued', NULL::int, NULL::jsonb),
      (m.created_at + interval '1 second',
       CASE WHEN m.status IN ('delivered', 'delivery_failed') THEN 'sent' ELSE m.status END,
       CASE WHEN m.status IN ('sent', 'delivered', 'delivery_failed') THEN 'provider_accepted'
            WHEN m.status = 'sending_failed' THEN 'http_400' WHEN m.status = 'rejected' THEN 'frequency_capped'
            WHEN m.status = 'expired' THEN 'validity_passed' ELSE 'operator_cancel' END,
       1, '{"http_status": 202}'::jsonb),
      (m.created_at + interval '5 seconds', m.status, 'receipt', NULL, NULL)
  ) AS x(at, status, reason, attempt, detail)
 WHERE m.id >= (SELECT tidings.uuid_v7(now() - make_interval(days => :hi))) AND m.id < (SELECT tidings.uuid_v7(now() - make_interval(days => :lo)))
   AND (x.reason <> 'receipt' OR m.status IN ('delivered', 'delivery_failed'))
   AND (x.reason = 'enqueued' OR m.status <> 'scheduled')
 ORDER BY m.id, x.at;
