-- How many tool calls the reply made (all choices).
ALTER TABLE usage_ledger ADD COLUMN tool_calls BIGINT NOT NULL DEFAULT 0;
