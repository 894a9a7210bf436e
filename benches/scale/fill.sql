-- One batch of messages (:batch from 0 to 9, 1M each) for the 10M listing measurement: 20 days of history ending
-- now, 500k messages a day, in a realistic mix of channels, statuses, tags, references and recipients.
-- Rows go straight into the tables (not through enqueue: that is measured elsewhere); the recipient lookup is
-- filled by its trigger as enqueue would.
\set n 1000000
WITH g AS (
    SELECT b.i,
           now() - interval '20 days' + (b.i::double precision / (10 * :n)) * interval '20 days' AS t,
           hashint8(b.i) AS h1, hashint8(b.i + 7919) AS h2
      FROM generate_series(:batch * :n::bigint, (:batch + 1) * :n::bigint - 1) AS b(i)
), r AS (
    SELECT g.*, (abs(h1) % 1000)::int AS p, (abs(h2) % 1000)::int AS q FROM g
)
INSERT INTO tidings.messages (id, channel, recipient, content, use_case, status, priority, scheduled_for, run_at,
                              expires_at, ignore_quiet_hours, cap_frequency, tags, reference, attempts,
                              max_attempts, provider_message_id, last_error, created_at, updated_at)
SELECT (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7'
        || substr(md5(i::text), 1, 3) || '8' || substr(md5(i::text || 'x'), 1, 15))::uuid,
       CASE WHEN p < 500 THEN 'sms' WHEN p < 750 THEN 'whatsapp' WHEN p < 900 THEN 'push' ELSE 'promo_sms' END,
       jsonb_build_object('phone', '+316' || lpad((abs(h2) % 1000000)::text, 8, '0')),
       jsonb_build_object('text', 'Your order ' || i || ' is on its way'),
       CASE WHEN p >= 900 THEN 'marketing' WHEN q < 5 THEN '2fa' ELSE 'transactional' END,
       (CASE WHEN i >= 10 * :n - 20000 THEN 'scheduled'
             WHEN q < 800 THEN 'delivered' WHEN q < 900 THEN 'sent' WHEN q < 930 THEN 'sending_failed'
             WHEN q < 950 THEN 'rejected' WHEN q < 960 THEN 'expired' WHEN q < 970 THEN 'canceled'
             WHEN q < 980 THEN 'delivery_failed' ELSE 'delivered' END)::tidings.message_status,
       0, NULL,
       CASE WHEN i >= 10 * :n - 20000 THEN now() + interval '1 day' ELSE t END,
       t + interval '36 hours', false, false,
       CASE WHEN q % 10 < 3 THEN ARRAY['campaign-' || (abs(h1) % 50)] WHEN q % 100 = 7 THEN ARRAY['rare-' || (abs(h1) % 5)] ELSE '{}' END,
       CASE WHEN q % 5 = 0 THEN 'order-' || i END,
       CASE WHEN i >= 10 * :n - 20000 THEN 0 ELSE 1 END, 10,
       CASE WHEN q < 900 OR q >= 970 THEN 'pm-' || md5(i::text) END,
       CASE WHEN q >= 900 AND q < 930 THEN 'http_400' END,
       t, t + interval '5 seconds'
  FROM r;
