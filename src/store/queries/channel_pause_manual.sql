-- An operator's pause of channel $1 until $2 (reason $3), shared by every worker like a 429's pause (the claim
-- skips paused channels). Unlike channel_pause.sql it replaces any pause in force, so an operator can also
-- shorten one. Returns the channel when it exists.
INSERT INTO tidings.channel_state AS s (channel, paused_until, pause_reason)
SELECT c.name, $2, $3 FROM tidings.channels c WHERE c.name = $1
ON CONFLICT (channel) DO UPDATE
   SET paused_until = excluded.paused_until, pause_reason = excluded.pause_reason
RETURNING s.channel
