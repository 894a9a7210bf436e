-- The message of a late receipt in the history (see message_receipt.sql for the matching rules): by our id first,
-- else by the provider's id, only among the channel's messages and only a `sent` one (a receipt changes nothing
-- else, so nothing else is brought back). $1 channel, $2 message id, $3 provider_message_id.
(SELECT id FROM tidings.message_history WHERE id = $2::uuid AND channel = $1 AND status = 'sent')
UNION ALL
(SELECT id FROM tidings.message_history
  WHERE $3::text IS NOT NULL AND provider_message_id = $3 AND channel = $1 AND status = 'sent'
  LIMIT 1)
LIMIT 1
