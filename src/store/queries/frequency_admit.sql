-- Admit message $3 to recipient $2 under channel kind $1's frequency cap of $4 per $5 seconds (see
-- tidings.frequency_admit: serialised per recipient, so concurrent workers never over-send).
SELECT tidings.frequency_admit($1, tidings.recipient_key($2), $3, $4, make_interval(secs => $5))
