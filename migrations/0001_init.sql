-- Herald's event log. Every object is unqualified: it lands in the first
-- schema of the connection's search_path (tests use one schema each).
--
-- Locks: the functions below take transaction-level advisory locks keyed by
-- (hashtext(current_schema()), n), so deployments (and tests) in different
-- schemas of one database do not contend:
--   n = 1  the write lock: every statement that creates positions holds it
--          (herald_publish, herald_edit, herald_delete_channel);
--   n = 2  the retention lock: one herald_trim at a time.
--
-- Plans: PL/pgSQL caches a plan per session, and one made while herald_events
-- was small (a hash join over a seq scan, cheapest then) stays in use as the
-- table grows until the next ANALYZE: every batch then scans the whole table
-- (measured: 2 ms -> 18 ms per 64-event batch within 20k rows). The hot
-- functions (herald_publish, herald_edit) only ever need index lookups for a
-- batch's rows, so they build one generic plan per session with seq scans,
-- hash and merge joins disabled (nested loops over index scans, whatever the
-- table size). Planning anew on every call would be safe too but costs about
-- as much as running the statement (~1 ms). The rare functions
-- (herald_delete_channel, herald_trim) are planned anew on every call.

-- +goose Up

-- herald_channels holds each channel's settings. A deleted channel keeps its
-- row (deleted_at set) so that truncated_through survives: a channel created
-- again under the same name reports the positions its predecessor lost.
CREATE TABLE herald_channels (
    name              text COLLATE "C" PRIMARY KEY,
    max_events        bigint      NOT NULL DEFAULT 0,          -- 0: no limit
    max_age           interval    NOT NULL DEFAULT '0',        -- 0: no limit
    max_event_size    integer     NOT NULL DEFAULT 65536,
    truncated_through bigint      NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);

-- herald_events is the log. id is the global position: it is assigned only
-- while holding the write lock, which is released after the commit has made
-- the rows visible, so positions become visible in order and a reader
-- polling "id > cursor" misses nothing.
CREATE TABLE herald_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel         text        NOT NULL,
    kind            smallint    NOT NULL DEFAULT 1,   -- 1 published, 2 updated, 3 deleted
    target          bigint      NOT NULL DEFAULT 0,   -- position an updated/deleted entry refers to
    type            text        NOT NULL DEFAULT '',
    data            bytea       NOT NULL DEFAULT '',
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz,
    deleted         boolean     NOT NULL DEFAULT false
);

CREATE INDEX herald_events_channel_id ON herald_events (channel, id);
CREATE UNIQUE INDEX herald_events_channel_key ON herald_events (channel, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX herald_events_created_at ON herald_events USING brin (created_at);

-- herald_publish appends a batch in one call: each instance's writer sends up
-- to ~500 events as parallel arrays. It returns one row per input, ord being
-- the 1-based index, with status
--   0 inserted (id, created_at set);
--   1 duplicate: the idempotency key was already used in the channel. Either
--     an existing event (id, created_at, type, data, updated_at, deleted
--     describe it) or an earlier input of this batch (dup_of is its ord);
--   2 channel not found (deleted, or missing without p_auto_create);
--   3 too large: octet_length(data) > size_limit, the channel's max_event_size.
-- Ids are drawn from the identity sequence under the write lock and handed
-- out in input order.
-- +goose StatementBegin
CREATE FUNCTION herald_publish(
    p_channels    text[],
    p_types       text[],
    p_data        bytea[],
    p_keys        text[],
    p_auto_create boolean
) RETURNS TABLE (
    ord        bigint,
    status     smallint,
    id         bigint,
    created_at timestamptz,
    type       text,
    data       bytea,
    updated_at timestamptz,
    deleted    boolean,
    dup_of     bigint,
    size_limit integer
)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), 1);
    -- Read under the lock, so created_at grows with id and retention by age
    -- removes a prefix of each channel.
    v_now := clock_timestamp();

    IF p_auto_create THEN
        INSERT INTO herald_channels AS c (name, created_at, updated_at)
        SELECT DISTINCT u.name, v_now, v_now
        FROM unnest(p_channels) AS u(name)
        WHERE NOT EXISTS (
            SELECT 1 FROM herald_channels h WHERE h.name = u.name AND h.deleted_at IS NULL)
        ON CONFLICT (name) DO UPDATE
            SET max_events = 0, max_age = '0', max_event_size = 65536,
                created_at = v_now, updated_at = v_now, deleted_at = NULL
            WHERE c.deleted_at IS NOT NULL;
    END IF;

    -- One statement: classify, number, insert, answer.
    RETURN QUERY
    WITH input AS (
        SELECT i.ord, i.channel, coalesce(i.type, '') AS type, coalesce(i.data, '') AS data,
               nullif(i.key, '') AS key
        FROM unnest(p_channels, p_types, p_data, p_keys)
             WITH ORDINALITY AS i(channel, type, data, key, ord)
    ),
    classified AS (
        SELECT i.*, c.max_event_size,
               e.id AS dup_id, e.created_at AS dup_created_at, e.type AS dup_type,
               e.data AS dup_data, e.updated_at AS dup_updated_at, e.deleted AS dup_deleted,
               CASE
                   WHEN c.name IS NULL THEN 2
                   WHEN e.id IS NOT NULL THEN 1
                   WHEN octet_length(i.data) > c.max_event_size THEN 3
                   ELSE 0
               END AS status
        FROM input i
        LEFT JOIN herald_channels c ON c.name = i.channel AND c.deleted_at IS NULL
        LEFT JOIN herald_events e ON e.channel = i.channel AND e.idempotency_key = i.key
    ),
    ranked AS (
        -- The first insertable input of each (channel, key) is written; later
        -- ones of the same batch are duplicates of it.
        SELECT cl.*,
               min(cl.ord) FILTER (WHERE cl.status = 0)
                   OVER (PARTITION BY cl.channel, cl.key) AS first_ord
        FROM classified cl
    ),
    flagged AS (
        SELECT r.*, r.status = 0 AND (r.key IS NULL OR r.ord = r.first_ord) AS write
        FROM ranked r
    ),
    numbered AS (
        -- n: 1-based rank of the input among those written.
        SELECT f.*, count(*) FILTER (WHERE f.write) OVER (ORDER BY f.ord) AS n
        FROM flagged f
    ),
    ids AS (
        -- Sorted, so the n-th input written gets the n-th smallest id
        -- whatever order nextval was evaluated in.
        SELECT array_agg(s.v ORDER BY s.v) AS v
        FROM (SELECT nextval('herald_events_id_seq') AS v FROM numbered WHERE numbered.write) s
    ),
    ins AS (
        INSERT INTO herald_events (id, channel, kind, type, data, idempotency_key, created_at)
        OVERRIDING SYSTEM VALUE
        SELECT ids.v[nb.n], nb.channel, 1, nb.type, nb.data, nb.key, v_now
        FROM numbered nb CROSS JOIN ids
        WHERE nb.write
        RETURNING 1
    )
    SELECT nb.ord,
           (CASE WHEN nb.write THEN 0 WHEN nb.status = 0 THEN 1 ELSE nb.status END)::smallint,
           CASE WHEN nb.write THEN ids.v[nb.n] WHEN nb.status = 1 THEN nb.dup_id END,
           CASE WHEN nb.write THEN v_now WHEN nb.status = 1 THEN nb.dup_created_at END,
           nb.dup_type, nb.dup_data, nb.dup_updated_at, nb.dup_deleted,
           CASE WHEN NOT nb.write AND nb.status = 0 THEN nb.first_ord END,
           nb.max_event_size
    FROM numbered nb CROSS JOIN ids
    ORDER BY nb.ord;
END;
$$;
-- +goose StatementEnd

-- herald_edit replaces the data of a published event (p_delete false) or
-- deletes it (p_delete true), and appends the Updated (kind 2) or Deleted
-- (kind 3) entry, under the write lock. status: 0 done, 1 no such event in
-- the channel, 2 not editable (deleted, or not a published event), 3 too
-- large (size_limit is the channel's max_event_size).
-- +goose StatementBegin
CREATE FUNCTION herald_edit(
    p_channel text,
    p_target  bigint,
    p_delete  boolean,
    p_data    bytea
) RETURNS TABLE (
    status           smallint,
    size_limit       integer,
    entry_id         bigint,
    entry_created_at timestamptz,
    ev_type          text,
    ev_key           text,
    ev_created_at    timestamptz,
    ev_updated_at    timestamptz
)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
#variable_conflict use_column
DECLARE
    v_now   timestamptz;
    v_ev    herald_events;
    v_limit integer;
    v_id    bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), 1);
    v_now := clock_timestamp();

    -- FOR UPDATE: retention does not hold the write lock and may be deleting
    -- this row.
    SELECT * INTO v_ev FROM herald_events e
    WHERE e.id = p_target AND e.channel = p_channel
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 1::smallint, NULL::integer, NULL::bigint, NULL::timestamptz,
            NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz;
        RETURN;
    END IF;
    IF v_ev.kind <> 1 OR v_ev.deleted THEN
        RETURN QUERY SELECT 2::smallint, NULL::integer, NULL::bigint, NULL::timestamptz,
            NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz;
        RETURN;
    END IF;

    IF p_delete THEN
        UPDATE herald_events SET data = '', deleted = true WHERE id = p_target;
    ELSE
        SELECT c.max_event_size INTO v_limit FROM herald_channels c
        WHERE c.name = p_channel AND c.deleted_at IS NULL;
        IF octet_length(p_data) > v_limit THEN
            RETURN QUERY SELECT 3::smallint, v_limit, NULL::bigint, NULL::timestamptz,
                NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz;
            RETURN;
        END IF;
        UPDATE herald_events SET data = p_data, updated_at = v_now WHERE id = p_target;
    END IF;

    INSERT INTO herald_events (channel, kind, target, type, data, created_at)
    VALUES (p_channel, CASE WHEN p_delete THEN 3 ELSE 2 END, p_target, v_ev.type,
            CASE WHEN p_delete THEN ''::bytea ELSE p_data END, v_now)
    RETURNING herald_events.id INTO v_id;

    RETURN QUERY SELECT 0::smallint, v_limit, v_id, v_now,
        v_ev.type, v_ev.idempotency_key, v_ev.created_at,
        CASE WHEN p_delete THEN v_ev.updated_at ELSE v_now END;
END;
$$;
-- +goose StatementEnd

-- herald_delete_channel soft-deletes a channel and deletes its entries,
-- raising truncated_through over them, under the write lock (so no publish
-- to the channel can commit in between). Returns false when the channel does
-- not exist.
-- +goose StatementBegin
CREATE FUNCTION herald_delete_channel(p_name text) RETURNS boolean
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), 1);
    UPDATE herald_channels SET deleted_at = now(), updated_at = now()
    WHERE name = p_name AND deleted_at IS NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    WITH d AS (DELETE FROM herald_events WHERE channel = p_name RETURNING id)
    UPDATE herald_channels
    SET truncated_through = greatest(truncated_through, coalesce((SELECT max(d.id) FROM d), 0))
    WHERE name = p_name;
    RETURN true;
END;
$$;
-- +goose StatementEnd

-- herald_trim applies retention to the channels named >= p_from, deleting
-- at most p_limit entries, and raises each channel's truncated_through to the
-- highest position it deleted, in the same transaction. locked is false when
-- another session holds the retention lock. resume_from is where the next
-- call starts (NULL: done).
-- +goose StatementBegin
CREATE FUNCTION herald_trim(
    p_now   timestamptz,
    p_limit bigint,
    p_from  text
) RETURNS TABLE (
    locked      boolean,
    deleted     bigint,
    resume_from text
)
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    ch      record;
    v_left  bigint := p_limit;
    v_total bigint := 0;
    v_n     bigint;
    v_m     bigint;
    v_max   bigint;
    v_upto  bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext(current_schema()), 2) THEN
        RETURN QUERY SELECT false, 0::bigint, NULL::text;
        RETURN;
    END IF;
    FOR ch IN
        SELECT c.name, c.max_events, c.max_age FROM herald_channels c
        WHERE c.deleted_at IS NULL AND c.name >= p_from
          AND (c.max_events > 0 OR c.max_age > interval '0')
        ORDER BY c.name
    LOOP
        v_max := 0;
        IF ch.max_age > interval '0' THEN
            WITH d AS (
                DELETE FROM herald_events e WHERE e.id IN (
                    SELECT e2.id FROM herald_events e2
                    WHERE e2.channel = ch.name AND e2.created_at < p_now - ch.max_age
                    ORDER BY e2.id LIMIT v_left)
                RETURNING e.id)
            SELECT count(*), coalesce(max(d.id), 0) INTO v_n, v_m FROM d;
            v_left := v_left - v_n;
            v_total := v_total + v_n;
            v_max := greatest(v_max, v_m);
        END IF;
        IF ch.max_events > 0 AND v_left > 0 THEN
            -- The newest entry beyond the max_events newest ones.
            SELECT e.id INTO v_upto FROM herald_events e
            WHERE e.channel = ch.name ORDER BY e.id DESC OFFSET ch.max_events LIMIT 1;
            IF v_upto IS NOT NULL THEN
                WITH d AS (
                    DELETE FROM herald_events e WHERE e.id IN (
                        SELECT e2.id FROM herald_events e2
                        WHERE e2.channel = ch.name AND e2.id <= v_upto
                        ORDER BY e2.id LIMIT v_left)
                    RETURNING e.id)
                SELECT count(*), coalesce(max(d.id), 0) INTO v_n, v_m FROM d;
                v_left := v_left - v_n;
                v_total := v_total + v_n;
                v_max := greatest(v_max, v_m);
            END IF;
        END IF;
        IF v_max > 0 THEN
            UPDATE herald_channels SET truncated_through = greatest(truncated_through, v_max)
            WHERE name = ch.name;
        END IF;
        IF v_left <= 0 THEN
            -- Budget spent: this channel may hold more; start there next time.
            RETURN QUERY SELECT true, v_total, ch.name::text;
            RETURN;
        END IF;
    END LOOP;
    RETURN QUERY SELECT true, v_total, NULL::text;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION herald_trim(timestamptz, bigint, text);
DROP FUNCTION herald_delete_channel(text);
DROP FUNCTION herald_edit(text, bigint, boolean, bytea);
DROP FUNCTION herald_publish(text[], text[], bytea[], text[], boolean);
DROP TABLE herald_events;
DROP TABLE herald_channels;
