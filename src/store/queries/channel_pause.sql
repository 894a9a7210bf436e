-- Pause channel $1 for every worker until $2 (after a 429). Never shortens a longer pause already in force.
INSERT INTO tidings.channel_state AS s (channel, paused_until, pause_reason)
VALUES ($1, $2, $3)
ON CONFLICT (channel) DO UPDATE
   SET paused_until = greatest(s.paused_until, excluded.paused_until),
       pause_reason = excluded.pause_reason
