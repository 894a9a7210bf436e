-- Give back $2 unused tokens to channel $1's bucket (capped at $3).
SELECT tidings.rate_return($1, $2, $3)
