-- The prompt registry. Portable SQL: the same file migrates SQLite and Postgres.
-- Versions are immutable; `version` counts up per name.
CREATE TABLE IF NOT EXISTS prompt_versions (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    messages TEXT NOT NULL,
    model TEXT,
    params TEXT NOT NULL,
    commit_message TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

-- A label points at one version (one row) or splits traffic across several (one row per arm).
CREATE TABLE IF NOT EXISTS prompt_labels (
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    version BIGINT NOT NULL,
    weight BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (name, label, version)
);

-- Bumped by every registry write: replicas reload when it changes; writers take turns on it.
CREATE TABLE IF NOT EXISTS prompt_revision (
    id BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO prompt_revision (id, revision) VALUES (1, 0);

-- Which prompt version a request used (empty and 0: none).
ALTER TABLE usage_ledger ADD COLUMN prompt_name TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_ledger ADD COLUMN prompt_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_ledger ADD COLUMN prompt_label TEXT NOT NULL DEFAULT '';
