-- One rollup pass's recount of the minutes [$1, $2), first step: their old counts go (rollup_count.sql then writes
-- them anew; two statements, as a DELETE and an INSERT of the same keys in one statement conflict).
DELETE FROM tidings.event_minutes WHERE minute >= $1 AND minute < $2
