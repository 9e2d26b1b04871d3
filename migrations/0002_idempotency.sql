-- The Idempotency-Key store of send requests. A table outside the six seed tables,
-- because a retried request must find the first answer from any API or ingest process,
-- and the first answer must be written in the same transaction as the rows it created.
-- Keyed by (application, key), so two applications may use the same key.
CREATE TABLE push_idempotency (
    app_id BIGINT NOT NULL REFERENCES push_app_credentials (id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response JSONB NOT NULL,
    timestamp_created TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (app_id, idempotency_key)
);

COMMENT ON TABLE push_idempotency IS
    'The first result of each send request that carried an Idempotency-Key, kept until expires_at.';
COMMENT ON COLUMN push_idempotency.request_hash IS
    'SHA-256 of the request; the same key with another request is rejected, not answered.';
COMMENT ON COLUMN push_idempotency.response IS
    'What a retry needs to answer without new rows: the mode and the message ids by provider.';

CREATE INDEX push_idempotency_expires_idx ON push_idempotency (expires_at);
