-- The semantic cache's shared entries (`[gateway.semantic_cache] backend = "postgres"`): one
-- answer per row with the unit vector of the question it answered, as little-endian f32
-- bytes (no pgvector here; each replica searches its own in-process index, kept in step by
-- NOTIFY sconce_semantic_cache). Times are unix milliseconds. SQLite gets the table too
-- (the same migrations run on both) but never uses it.
CREATE TABLE IF NOT EXISTS semantic_cache (
    id TEXT PRIMARY KEY,
    partition_key TEXT NOT NULL,
    vector BYTEA NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS semantic_cache_expires ON semantic_cache (expires_at);
CREATE INDEX IF NOT EXISTS semantic_cache_created ON semantic_cache (created_at);
