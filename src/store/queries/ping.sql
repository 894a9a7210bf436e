-- Liveness probe of the database (for /readyz).
SELECT 1
