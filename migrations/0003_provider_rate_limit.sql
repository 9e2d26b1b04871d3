-- Token buckets shared by every worker process and machine, for provider quotas such as
-- FCM's per-project limit of messages a minute. A table outside the six seed tables,
-- because the limit must hold across processes and PostgreSQL is the shared state they
-- already have.
CREATE TABLE push_rate_limit (
    name TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    timestamp_updated TIMESTAMPTZ NOT NULL DEFAULT now()
);

COMMENT ON TABLE push_rate_limit IS
    'Token buckets for provider quotas (fcm:<project>), shared by all workers.';
