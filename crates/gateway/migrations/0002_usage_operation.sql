-- Which API a ledger row came from: `chat` or `text_completion`.
ALTER TABLE usage_ledger ADD COLUMN operation TEXT NOT NULL DEFAULT 'chat';
