-- Take up to $2 tokens from channel $1's shared bucket (refill $3 per second, at most $4 saved up).
SELECT tidings.rate_take($1, $2, $3, $4)
