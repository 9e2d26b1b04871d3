-- The six tables of the PowerAuth Push Server's data model, with foreign keys, unique
-- constraints and the indexes the API, the workers and the sweeper query by.
-- Status values of push_message and push_campaign_device:
--   0 PENDING, 2 SENDING, 1 SENT, -1 FAILED.

CREATE TABLE push_app_credentials (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id TEXT NOT NULL,
    ios_key_id TEXT,
    ios_team_id TEXT,
    ios_bundle TEXT,
    ios_private_key BYTEA,
    ios_environment TEXT CHECK (ios_environment IN ('development', 'production')),
    android_private_key BYTEA,
    android_project_id TEXT,
    hms_project_id TEXT,
    hms_client_id TEXT,
    hms_client_secret BYTEA,
    timestamp_created TIMESTAMPTZ NOT NULL DEFAULT now(),
    timestamp_last_updated TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT push_app_credentials_app_id_key UNIQUE (app_id)
);

COMMENT ON COLUMN push_app_credentials.ios_private_key IS
    'The APNs .p8 key, AES-GCM encrypted under a master key whose id is stored with the value.';
COMMENT ON COLUMN push_app_credentials.android_private_key IS
    'The FCM service-account JSON, AES-GCM encrypted under a master key.';
COMMENT ON COLUMN push_app_credentials.ios_environment IS
    'Addition: the APNs environment of the application; NULL means the server-wide default.';
COMMENT ON COLUMN push_app_credentials.hms_project_id IS
    'Addition: the Huawei Push Kit project id, part of the HMS send URL.';
COMMENT ON COLUMN push_app_credentials.hms_client_id IS
    'Addition: the HMS OAuth client id (the AppGallery app id).';
COMMENT ON COLUMN push_app_credentials.hms_client_secret IS
    'Addition: the HMS OAuth client secret, AES-GCM encrypted under a master key.';
COMMENT ON COLUMN push_app_credentials.timestamp_created IS
    'Addition: when the application was created, for audits.';
COMMENT ON COLUMN push_app_credentials.timestamp_last_updated IS
    'Addition: changes on every credential update, so workers rebuild their cached provider clients.';

CREATE TABLE push_device (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    activation_id VARCHAR(37),
    user_id TEXT,
    app_id BIGINT NOT NULL REFERENCES push_app_credentials (id) ON DELETE CASCADE,
    platform TEXT NOT NULL CHECK (platform IN ('apns', 'fcm', 'hms')),
    push_token TEXT NOT NULL,
    environment TEXT CHECK (environment IN ('development', 'production')),
    timestamp_created TIMESTAMPTZ NOT NULL DEFAULT now(),
    timestamp_last_registered TIMESTAMPTZ NOT NULL DEFAULT now(),
    is_active BOOLEAN NOT NULL DEFAULT false,
    encryption_key BYTEA,
    encryption_key_index TEXT,
    timestamp_token_invalidated TIMESTAMPTZ
);

COMMENT ON COLUMN push_device.environment IS
    'Addition: the APNs environment of this device (development or production); NULL for FCM and HMS.';
COMMENT ON COLUMN push_device.timestamp_last_registered IS
    'Addition: the latest registration; an APNs 410 older than this does not invalidate the token.';
COMMENT ON COLUMN push_device.encryption_key IS
    'Key for end-to-end encrypted messages, AES-GCM encrypted under a master key.';
COMMENT ON COLUMN push_device.timestamp_token_invalidated IS
    'Addition: when a provider reported the token invalid; such devices are skipped until they register again.';

-- One device row per activation of an application.
CREATE UNIQUE INDEX push_device_app_activation_key
    ON push_device (app_id, activation_id) WHERE activation_id IS NOT NULL;
-- One row per (application, token, activation); NULLS NOT DISTINCT makes a registration
-- without an activation unique per token too.
ALTER TABLE push_device ADD CONSTRAINT push_device_app_token_activation_key
    UNIQUE NULLS NOT DISTINCT (app_id, push_token, activation_id);
CREATE INDEX push_device_app_user_idx ON push_device (app_id, user_id);
CREATE INDEX push_device_activation_idx ON push_device (activation_id);
-- (app_id, push_token) lookups use the leading columns of the unique constraint above.

CREATE TABLE push_message (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_registration_id BIGINT REFERENCES push_device (id) ON DELETE SET NULL,
    user_id TEXT NOT NULL,
    activation_id VARCHAR(37),
    app_id BIGINT NOT NULL REFERENCES push_app_credentials (id) ON DELETE CASCADE,
    silent BOOLEAN NOT NULL DEFAULT false,
    personal BOOLEAN NOT NULL DEFAULT false,
    encrypted BOOLEAN NOT NULL DEFAULT false,
    message_body JSONB NOT NULL,
    priority TEXT NOT NULL DEFAULT 'HIGH' CHECK (priority IN ('HIGH', 'NORMAL')),
    timestamp_created TIMESTAMPTZ NOT NULL DEFAULT now(),
    status SMALLINT NOT NULL DEFAULT 0 CHECK (status IN (-1, 0, 1, 2)),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_expires_at TIMESTAMPTZ,
    timestamp_queued TIMESTAMPTZ,
    timestamp_sent TIMESTAMPTZ,
    failure_reason TEXT,
    provider_message_id TEXT,
    idempotency_key TEXT
);

COMMENT ON COLUMN push_message.app_id IS
    'Addition: the application, so a message can be sent and cleaned up after its device row is gone.';
COMMENT ON COLUMN push_message.priority IS
    'Addition: HIGH or NORMAL, mapped to each provider''s delivery priority.';
COMMENT ON COLUMN push_message.attempts IS
    'Addition: claims so far; transient failures fail the row after the attempt limit.';
COMMENT ON COLUMN push_message.next_attempt_at IS
    'Addition: when a PENDING row may be tried (retry backoff, Retry-After).';
COMMENT ON COLUMN push_message.lease_expires_at IS
    'Addition: end of a worker''s claim on a SENDING row; after it the sweeper hands the row out again.';
COMMENT ON COLUMN push_message.timestamp_queued IS
    'Addition: the latest publish of the row id to the queue; the sweeper re-publishes rows the queue lost.';
COMMENT ON COLUMN push_message.timestamp_sent IS
    'Addition: when the provider accepted the message.';
COMMENT ON COLUMN push_message.failure_reason IS
    'Addition: why a FAILED row failed (provider reason, device_removed, expired, cancelled).';
COMMENT ON COLUMN push_message.provider_message_id IS
    'Addition: the provider''s id of the accepted message (apns-id, FCM message name, HMS request id).';
COMMENT ON COLUMN push_message.idempotency_key IS
    'Addition: the Idempotency-Key of the send request that created the row.';

-- The sweeper and the claim look only at unfinished rows, so the index stays small.
CREATE INDEX push_message_due_idx ON push_message (next_attempt_at) WHERE status IN (0, 2);
CREATE INDEX push_message_device_idx ON push_message (device_registration_id);
CREATE INDEX push_message_app_idx ON push_message (app_id);
CREATE INDEX push_message_idempotency_idx ON push_message (app_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE push_campaign (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id BIGINT NOT NULL REFERENCES push_app_credentials (id) ON DELETE CASCADE,
    message JSONB NOT NULL,
    attributes JSONB NOT NULL DEFAULT '{"silent": false, "personal": false}',
    priority TEXT NOT NULL DEFAULT 'HIGH' CHECK (priority IN ('HIGH', 'NORMAL')),
    sent BOOLEAN NOT NULL DEFAULT false,
    state TEXT NOT NULL DEFAULT 'created'
        CHECK (state IN ('created', 'sending', 'completed', 'cancelled')),
    timestamp_created TIMESTAMPTZ NOT NULL DEFAULT now(),
    timestamp_sent TIMESTAMPTZ,
    timestamp_completed TIMESTAMPTZ
);

COMMENT ON COLUMN push_campaign.attributes IS
    'Addition: silent and personal flags of the campaign message; the original always sent neither.';
COMMENT ON COLUMN push_campaign.priority IS
    'Addition: HIGH or NORMAL delivery priority of the campaign message.';
COMMENT ON COLUMN push_campaign.state IS
    'Addition: created, sending, completed or cancelled; sent alone cannot tell a running campaign from a new one.';
COMMENT ON COLUMN push_campaign.timestamp_completed IS
    'Addition: when the last campaign device reached SENT or FAILED.';

CREATE INDEX push_campaign_app_idx ON push_campaign (app_id);
CREATE INDEX push_campaign_sent_idx ON push_campaign (sent);

CREATE TABLE push_campaign_user (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id BIGINT NOT NULL REFERENCES push_campaign (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    timestamp_created TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT push_campaign_user_campaign_user_key UNIQUE (campaign_id, user_id)
);

CREATE TABLE push_campaign_device (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id BIGINT NOT NULL REFERENCES push_campaign (id) ON DELETE CASCADE,
    device_registration_id BIGINT REFERENCES push_device (id) ON DELETE SET NULL,
    platform TEXT NOT NULL CHECK (platform IN ('apns', 'fcm', 'hms')),
    token TEXT NOT NULL,
    status SMALLINT NOT NULL DEFAULT 0 CHECK (status IN (-1, 0, 1, 2)),
    timestamp_created TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_expires_at TIMESTAMPTZ,
    timestamp_queued TIMESTAMPTZ,
    timestamp_sent TIMESTAMPTZ,
    failure_reason TEXT,
    provider_message_id TEXT,
    CONSTRAINT push_campaign_device_campaign_platform_token_key
        UNIQUE (campaign_id, platform, token)
);

COMMENT ON COLUMN push_campaign_device.device_registration_id IS
    'Addition: the device the row was expanded from; its current environment and state are read at send time.';
COMMENT ON COLUMN push_campaign_device.attempts IS
    'Addition: claims so far; transient failures fail the row after the attempt limit.';
COMMENT ON COLUMN push_campaign_device.next_attempt_at IS
    'Addition: when a PENDING row may be tried (retry backoff, Retry-After).';
COMMENT ON COLUMN push_campaign_device.lease_expires_at IS
    'Addition: end of a worker''s claim on a SENDING row; after it the sweeper hands the row out again.';
COMMENT ON COLUMN push_campaign_device.timestamp_queued IS
    'Addition: the latest publish of the row id to the queue; the sweeper re-publishes rows the queue lost.';
COMMENT ON COLUMN push_campaign_device.timestamp_sent IS
    'Addition: when the provider accepted the message.';
COMMENT ON COLUMN push_campaign_device.failure_reason IS
    'Addition: why a FAILED row failed (provider reason, device_removed, expired, cancelled).';
COMMENT ON COLUMN push_campaign_device.provider_message_id IS
    'Addition: the provider''s id of the accepted message.';

CREATE INDEX push_campaign_device_due_idx ON push_campaign_device (next_attempt_at)
    WHERE status IN (0, 2);
CREATE INDEX push_campaign_device_campaign_status_idx ON push_campaign_device (campaign_id, status);
CREATE INDEX push_campaign_device_device_idx ON push_campaign_device (device_registration_id);
