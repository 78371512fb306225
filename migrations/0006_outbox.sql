-- Publishing from the application's own transaction (the outbox).
--
-- An application that shares Herald's database calls herald_publish_tx in
-- its transaction:
--
--   BEGIN;
--   UPDATE orders SET paid = true WHERE id = 42;
--   SELECT herald_publish_tx('orders:42', 'order.paid', '{"total":12}'::jsonb, 'pay-42');
--   COMMIT;
--
-- The call checks its arguments (the names, the key, data not NULL and at
-- most 1 MiB: what it can check without reading Herald's tables) and
-- writes one small row to herald_outbox; it takes no Herald lock and waits
-- for nothing. The channel's own rules (its max_event_size; that it exists,
-- when auto-create is off) apply when the row is drained: a row they refuse
-- is kept in herald_outbox_failed, and the draining instance logs it. The row becomes visible
-- when, and only if, the transaction commits (a rollback, or the rollback of
-- a savepoint around the call, leaves nothing). Herald's instances drain
-- committed rows into the log with herald_outbox_drain: under the write
-- lock, in one transaction that deletes the rows and appends the events, so
-- an instance that dies mid-drain leaves every row either drained once or
-- still waiting. Rows are claimed by deleting what is visible, never by an
-- id cursor: a transaction that took a lower id but committed later is
-- simply drained by a later call (see docs/architecture.md on why an
-- identity column alone skips rows).
--
-- Order. A drain appends the rows it claims grouped by transaction, the
-- transactions in the order of their first row, each transaction's rows in
-- the order they were written. Together with the write lock this makes
-- positions follow commits: a transaction that committed before another
-- began gets lower positions, and (because the writer drains the outbox
-- in the same transaction, before each batch of RPC publishes) so does a
-- transaction that committed before an RPC publish was sent.
--
-- Privileges. herald_publish_tx runs as its owner (SECURITY DEFINER, with
-- search_path pinned to this schema): a role that may EXECUTE it needs no
-- privilege on herald_outbox or herald_events, and cannot write either
-- directly. EXECUTE is revoked from PUBLIC; grant it to the application's
-- role (docs/operations.md#publish-from-your-transaction).
--
-- Events published this way have author 'db:<role>', the caller's role
-- (its SET ROLE, else its login role). Namespace policies do not apply: the
-- database grant is the authorization. Unknown channels are created with
-- default settings when the instance that drains runs with auto-create on.
--
-- Rollout: instances of the previous release do not drain the outbox;
-- events published with herald_publish_tx wait until an instance of this
-- release runs. This release's writer needs herald_outbox_drain: migrate
-- before starting it (serve does).
--
-- Locks: the write lock (n = 1) as in 0001_init.sql, taken by the drain only
-- when the outbox holds rows.

-- +goose Up

-- herald_outbox holds published events of committed transactions until an
-- instance drains them. tx groups a transaction's rows (and orders them
-- with id); digest is sha256(data) for keyed rows, computed here so the
-- drain does not hash under the write lock.
CREATE TABLE herald_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx              xid8        NOT NULL DEFAULT pg_current_xact_id(),
    channel         text        NOT NULL,
    type            text        NOT NULL,
    data            bytea       NOT NULL,
    format          smallint    NOT NULL,
    idempotency_key text,
    digest          bytea,
    author          text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- herald_outbox_failed keeps rows the drain could not append, with why:
-- code 'channel_not_found' (deleted, or unknown with auto-create off),
-- 'too_large' (over the channel's max_event_size) or
-- 'idempotency_conflict' (the key was used on the channel for another type
-- or data; position is that event's). A row whose key matches the same
-- event (a duplicate) is not a failure: it is dropped.
CREATE TABLE herald_outbox_failed (
    id              bigint PRIMARY KEY,
    channel         text        NOT NULL,
    type            text        NOT NULL,
    data            bytea       NOT NULL,
    format          smallint    NOT NULL,
    idempotency_key text,
    author          text        NOT NULL,
    created_at      timestamptz NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    code            text        NOT NULL,
    reason          text        NOT NULL,
    position        bigint
);

-- herald_outbox_refuse says why herald_publish_tx could not write an
-- event's row: it raises the first problem it finds. Called only when the
-- one checked INSERT of herald_publish_tx wrote nothing (that fast path
-- evaluates the same conditions in SQL, so that a call costs one
-- statement; see docs/benchmarks.md). Not granted to anyone.
-- +goose StatementBegin
CREATE FUNCTION herald_outbox_refuse(
    p_channel text,
    p_type    text,
    p_data    bytea,
    p_key     text
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_type text := coalesce(p_type, '');
    v_key  text := nullif(p_key, '');
BEGIN
    IF p_channel IS NULL OR p_channel !~ '^[A-Za-z0-9][A-Za-z0-9_.:@/=-]*$' OR length(p_channel) > 128 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('herald_publish_tx: channel %L is not a valid channel name', p_channel),
            HINT = 'Channel names are 1 to 128 characters of A-Z a-z 0-9 _ . : @ / = - starting with a letter or digit, e.g. ''orders:42''.';
    END IF;
    IF v_type !~ '^[A-Za-z0-9_.:/-]*$' OR length(v_type) > 64 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('herald_publish_tx: type %L is not a valid event type', v_type),
            HINT = 'Event types are up to 64 characters of A-Z a-z 0-9 _ . : / -, e.g. ''order.paid''; empty means "message".';
    END IF;
    IF v_key !~ '^[!-~]+$' OR length(v_key) > 128 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('herald_publish_tx: idempotency key %L is not valid', v_key),
            HINT = 'Idempotency keys are up to 128 visible ASCII characters (''!'' to ''~''): no spaces.';
    END IF;
    IF p_data IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'herald_publish_tx: data is NULL',
            HINT = 'Pass ''''::text or ''\x''::bytea for an event without data, ''null''::jsonb for JSON null.';
    END IF;
    IF octet_length(p_data) > 1048576 THEN
        RAISE EXCEPTION USING ERRCODE = '54000',
            MESSAGE = format('herald_publish_tx: event data is %s bytes, more than 1 MiB (1048576 bytes)', octet_length(p_data)),
            HINT = 'Publish less data: events hold at most 1 MiB, and at most the channel''s max_event_size (64 KiB unless changed).';
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'XX000',
        MESSAGE = 'herald_publish_tx: the event was refused for no reason herald_outbox_refuse knows (a bug)';
END;
$$;
-- +goose StatementEnd

REVOKE EXECUTE ON FUNCTION herald_outbox_refuse(text, text, bytea, text) FROM PUBLIC;

-- herald_publish_tx(channel text, type text, data jsonb|json|text|bytea,
-- idempotency_key text DEFAULT NULL) publishes one event when the calling
-- transaction commits. The type of data says the event's format: jsonb
-- and json are JSON (jsonb as PostgreSQL prints it, e.g. {"total": 12};
-- json exactly as written), text is UTF-8 text, bytea opaque bytes. An
-- untyped literal is text. idempotency_key is optional: an event whose key
-- was already used on the channel with the same type and data is not
-- published again.
--
-- The four overloads are one template, made below for each type. Each
-- runs as its owner (SECURITY DEFINER) with search_path pinned to this
-- schema, then pg_temp (last, so that no caller's temporary table can
-- stand in for herald_outbox), and EXECUTE is revoked from PUBLIC.
-- +goose StatementBegin
DO $do$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT * FROM (VALUES
        ('jsonb', $e$convert_to(p_data::text, 'UTF8')$e$, 2),
        ('json',  $e$convert_to(p_data::text, 'UTF8')$e$, 2),
        ('text',  $e$convert_to(p_data, 'UTF8')$e$, 3),
        ('bytea', $e$p_data$e$, 0)
    ) AS t(type, bytes, format)
    LOOP
        EXECUTE format($f$
CREATE FUNCTION herald_publish_tx(p_channel text, p_type text, p_data %1$s, p_idempotency_key text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = %4$I, pg_temp
AS $body$
BEGIN
    -- One statement checks (as herald_outbox_refuse does) and inserts.
    INSERT INTO herald_outbox (channel, type, data, format, idempotency_key, digest, author)
    SELECT p_channel, coalesce(p_type, ''), d.data, %3$s, nullif(p_idempotency_key, ''),
           CASE WHEN nullif(p_idempotency_key, '') IS NOT NULL THEN sha256(d.data) END,
           'db:' || CASE WHEN current_setting('role') = 'none' THEN session_user::text
                         ELSE current_setting('role') END
    FROM (SELECT %2$s AS data) d
    WHERE p_channel ~ '^[A-Za-z0-9][A-Za-z0-9_.:@/=-]*$' AND length(p_channel) <= 128
      AND coalesce(p_type, '') ~ '^[A-Za-z0-9_.:/-]*$' AND length(coalesce(p_type, '')) <= 64
      AND (nullif(p_idempotency_key, '') IS NULL
           OR p_idempotency_key ~ '^[!-~]+$' AND length(p_idempotency_key) <= 128)
      AND d.data IS NOT NULL AND octet_length(d.data) <= 1048576;
    IF NOT FOUND THEN
        PERFORM herald_outbox_refuse(p_channel, p_type, %2$s, p_idempotency_key);
    END IF;
END;
$body$
$f$, v.type, v.bytes, v.format, current_schema());
        EXECUTE format('REVOKE EXECUTE ON FUNCTION herald_publish_tx(text, text, %s, text) FROM PUBLIC', v.type);
    END LOOP;
END;
$do$;
-- +goose StatementEnd

-- herald_outbox_drain appends up to p_limit outbox rows to the log and
-- deletes them, in the caller's transaction (Herald's writer runs it in
-- the same implicit transaction as the batch of RPC publishes that
-- follows). It returns how many rows it claimed, how many became events
-- (the others were duplicates or failed), the highest position written
-- (0 if none) and one message per failed row (kept in
-- herald_outbox_failed). With an empty outbox it returns at once without
-- taking the write lock.
-- +goose StatementBegin
CREATE FUNCTION herald_outbox_drain(p_limit integer, p_auto_create boolean)
RETURNS TABLE (
    drained   integer,
    published integer,
    max_id    bigint,
    failures  text[]
)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_ids      bigint[];
    v_channels text[];
    v_types    text[];
    v_data     bytea[];
    v_keys     text[];
    v_authors  text[];
    v_digests  bytea[];
    v_formats  smallint[];
    v_created  timestamptz[];
    v_pub      integer := 0;
    v_max      bigint := 0;
    v_fail     text[] := '{}';
    v_code     text;
    v_reason   text;
    r          record;
BEGIN
    PERFORM 1 FROM herald_outbox LIMIT 1;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, 0, 0::bigint, '{}'::text[];
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), 1);
    -- Claimed under the write lock: a drain that commits positions has seen
    -- every row committed before it took the lock. SKIP LOCKED keeps a
    -- drain from waiting on rows someone else holds; with the lock held
    -- that is only ever a row being deleted by hand.
    WITH claimed AS (
        DELETE FROM herald_outbox o
        WHERE o.id IN (SELECT i.id FROM herald_outbox i ORDER BY i.id LIMIT p_limit FOR UPDATE SKIP LOCKED)
        RETURNING o.*
    ),
    ordered AS (
        SELECT c.*, min(c.id) OVER (PARTITION BY c.tx) AS first_id FROM claimed c
    )
    SELECT array_agg(o.id ORDER BY o.first_id, o.id),
           array_agg(o.channel ORDER BY o.first_id, o.id),
           array_agg(o.type ORDER BY o.first_id, o.id),
           array_agg(o.data ORDER BY o.first_id, o.id),
           array_agg(o.idempotency_key ORDER BY o.first_id, o.id),
           array_agg(o.author ORDER BY o.first_id, o.id),
           array_agg(o.digest ORDER BY o.first_id, o.id),
           array_agg(o.format ORDER BY o.first_id, o.id),
           array_agg(o.created_at ORDER BY o.first_id, o.id)
    INTO v_ids, v_channels, v_types, v_data, v_keys, v_authors, v_digests, v_formats, v_created
    FROM ordered o;
    IF v_ids IS NULL THEN
        RETURN QUERY SELECT 0, 0, 0::bigint, '{}'::text[];
        RETURN;
    END IF;

    FOR r IN
        SELECT p.ord, p.status, p.id, p.size_limit
        FROM herald_publish(v_channels, v_types, v_data, v_keys, v_authors, v_digests, v_formats, p_auto_create) p
    LOOP
        IF r.status = 0 THEN
            v_pub := v_pub + 1;
            v_max := greatest(v_max, r.id);
            CONTINUE;
        ELSIF r.status = 1 THEN
            CONTINUE; -- the same event was published already (same key, type and data)
        ELSIF r.status = 2 THEN
            v_code := 'channel_not_found';
            v_reason := format('channel %L not found (deleted, or unknown and auto-create is off)', v_channels[r.ord]);
        ELSIF r.status = 3 THEN
            v_code := 'too_large';
            v_reason := format('event data is %s bytes, the channel''s max_event_size is %s',
                               octet_length(v_data[r.ord]), coalesce(r.size_limit, 65536));
        ELSE
            v_code := 'idempotency_conflict';
            v_reason := format('idempotency key %L was already used on channel %L for a different event',
                               v_keys[r.ord], v_channels[r.ord]);
        END IF;
        INSERT INTO herald_outbox_failed (id, channel, type, data, format, idempotency_key, author,
                                          created_at, code, reason, position)
        VALUES (v_ids[r.ord], v_channels[r.ord], v_types[r.ord], v_data[r.ord], v_formats[r.ord],
                v_keys[r.ord], v_authors[r.ord], v_created[r.ord], v_code, v_reason,
                CASE WHEN r.status = 4 THEN r.id END);
        v_fail := v_fail || format('outbox row %s: %s', v_ids[r.ord], v_reason);
    END LOOP;
    RETURN QUERY SELECT cardinality(v_ids), v_pub, v_max, v_fail;
END;
$$;
-- +goose StatementEnd

REVOKE EXECUTE ON FUNCTION herald_outbox_drain(integer, boolean) FROM PUBLIC;

-- +goose Down
DROP FUNCTION herald_outbox_drain(integer, boolean);
DROP FUNCTION herald_publish_tx(text, text, bytea, text);
DROP FUNCTION herald_publish_tx(text, text, text, text);
DROP FUNCTION herald_publish_tx(text, text, json, text);
DROP FUNCTION herald_publish_tx(text, text, jsonb, text);
DROP FUNCTION herald_outbox_refuse(text, text, bytea, text);
DROP TABLE herald_outbox_failed;
DROP TABLE herald_outbox;
