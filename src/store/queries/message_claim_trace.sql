-- Appended to message_claim.sql's RETURNING list when the worker makes trace spans (`Store::message_claim`):
-- the producer's W3C trace context, for the attempt span's link; NULL for a message enqueued without one.
          , m.traceparent, m.tracestate
