-- Where a ledger row stands: `admitted` (written when the request was admitted, refreshed with
-- the tokens known so far while it runs), `done` (completed) or `interrupted` (the process died
-- while it ran; found in the spool at the next start). Rows from before this column are `done`.
ALTER TABLE usage_ledger ADD COLUMN state TEXT NOT NULL DEFAULT 'done';
CREATE INDEX IF NOT EXISTS usage_ledger_in_flight ON usage_ledger (request_id) WHERE state = 'admitted';
