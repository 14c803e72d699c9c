-- Per-key request limits: most choices per request, and the most urgent priority.
ALTER TABLE api_keys ADD COLUMN max_n BIGINT;
ALTER TABLE api_keys ADD COLUMN max_priority BIGINT;
