-- Channels paused right now, with until when and why.
SELECT channel, paused_until, pause_reason
  FROM tidings.channel_state
 WHERE paused_until > now()
 ORDER BY channel
