-- Portable SQL: the same file migrates SQLite and Postgres.
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    alias TEXT NOT NULL,
    team TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    models TEXT,
    rpm_limit BIGINT,
    tpm_limit BIGINT,
    max_budget DOUBLE PRECISION,
    budget_period TEXT,
    max_tokens BIGINT,
    revoked_at BIGINT
);

CREATE TABLE IF NOT EXISTS usage_ledger (
    request_id TEXT PRIMARY KEY,
    ts BIGINT NOT NULL,
    model TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_alias TEXT NOT NULL,
    team TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status BIGINT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    ttft_s DOUBLE PRECISION NOT NULL,
    tpot_s DOUBLE PRECISION NOT NULL,
    latency_s DOUBLE PRECISION NOT NULL,
    overhead_s DOUBLE PRECISION NOT NULL
);

CREATE INDEX IF NOT EXISTS usage_ledger_ts ON usage_ledger (ts);
CREATE INDEX IF NOT EXISTS usage_ledger_key_ts ON usage_ledger (key_id, ts);
