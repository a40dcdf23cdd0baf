-- Version 1: the durable event outbox and the dead-letter table.
-- Applied by onex_runtime::outbox::migrate inside one transaction under an advisory lock.
-- Each statement ends with ';' at the end of a line (the runner splits on that).

-- Events waiting for the broker. id gives the publish order; payload is the whole
-- serialized OnexEvent, so a republished event is the same event (same event_id).
CREATE TABLE IF NOT EXISTS onex_outbox (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    correlation_id uuid NOT NULL,
    event_type text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    published_at timestamptz
);

-- The relay scans unpublished rows in id order, and per key (correlation id).
CREATE INDEX IF NOT EXISTS onex_outbox_unpublished ON onex_outbox (id) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS onex_outbox_unpublished_key ON onex_outbox (correlation_id, id) WHERE published_at IS NULL;
-- Maintenance deletes published rows by age.
CREATE INDEX IF NOT EXISTS onex_outbox_published_at ON onex_outbox (published_at) WHERE published_at IS NOT NULL;

-- Events that could not be kept in the outbox (capacity) or published.
CREATE TABLE IF NOT EXISTS onex_dead_letter (
    id bigserial PRIMARY KEY,
    event jsonb NOT NULL,
    reason text NOT NULL,
    circuit_state text NOT NULL,
    retry_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS onex_dead_letter_created_at ON onex_dead_letter (created_at, id);
