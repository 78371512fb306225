-- Events say how their data is to be read: herald_events.format holds the
-- herald.v1.DataFormat of the data (0 bytes, 2 JSON, 3 UTF-8 text; 1, an
-- explicit "bytes", is stored as 0). The JSON encodings write JSON data as a
-- JSON value and text as a string instead of base64; the stored bytes are
-- the same whatever the format.
--
-- herald_publish and herald_edit get overloads taking the formats (0003's
-- herald_publish and 0002's herald_edit with one more parallel argument,
-- and one more column in what they return). UPDATED entries carry the
-- format of their data; an edit with format 0 keeps the event's.
--
-- Compatibility: the previous release's overloads stay, for instances of
-- that release during a rollout; what they write has format 0 (bytes), as
-- before.
--
-- Locks and plans: as in 0001_init.sql.

-- +goose Up

ALTER TABLE herald_events ADD COLUMN format smallint NOT NULL DEFAULT 0;

-- +goose StatementBegin
CREATE FUNCTION herald_publish(
    p_channels    text[],
    p_types       text[],
    p_data        bytea[],
    p_keys        text[],
    p_authors     text[],
    p_digests     bytea[],
    p_formats     smallint[],
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
    size_limit integer,
    author     text,
    format     smallint
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
        -- Only for an event the new channel can hold (the default
        -- max_event_size): a refused publish creates nothing.
        INSERT INTO herald_channels AS c (name, created_at, updated_at)
        SELECT DISTINCT u.name, v_now, v_now
        FROM unnest(p_channels, p_data) AS u(name, data)
        WHERE octet_length(coalesce(u.data, '')) <= 65536
          AND NOT EXISTS (
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
               nullif(i.key, '') AS key, coalesce(i.author, '') AS author,
               CASE WHEN nullif(i.key, '') IS NOT NULL THEN i.digest END AS digest,
               coalesce(i.format, 0)::smallint AS format
        FROM unnest(p_channels, p_types, p_data, p_keys, p_authors, p_digests, p_formats)
             WITH ORDINALITY AS i(channel, type, data, key, author, digest, format, ord)
    ),
    classified AS (
        SELECT i.*, c.max_event_size,
               e.id AS dup_id, e.created_at AS dup_created_at, e.type AS dup_type,
               e.data AS dup_data, e.updated_at AS dup_updated_at, e.deleted AS dup_deleted,
               e.author AS dup_author, e.format AS dup_format,
               CASE
                   WHEN c.name IS NULL THEN 2
                   WHEN e.id IS NOT NULL AND (e.type <> i.type OR
                        e.idempotency_digest IS NOT NULL AND e.idempotency_digest IS DISTINCT FROM i.digest) THEN 4
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
        -- ones of the same batch are compared with it. Insertable inputs sort
        -- first, so the window's first row is that input whenever there is
        -- one.
        SELECT cl.*,
               first_value(cl.ord) OVER w AS first_ord,
               first_value(cl.type) OVER w AS first_type,
               first_value(cl.digest) OVER w AS first_digest
        FROM classified cl
        WINDOW w AS (PARTITION BY cl.channel, cl.key ORDER BY cl.status <> 0, cl.ord)
    ),
    flagged AS (
        SELECT r.*,
               r.status = 0 AND (r.key IS NULL OR r.ord = r.first_ord) AS write,
               r.status = 0 AND r.key IS NOT NULL AND r.ord <> r.first_ord AND
                   (r.type <> r.first_type OR r.digest IS DISTINCT FROM r.first_digest) AS clash
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
        INSERT INTO herald_events (id, channel, kind, type, data, idempotency_key, created_at, author,
                                   idempotency_digest, format)
        OVERRIDING SYSTEM VALUE
        SELECT ids.v[nb.n], nb.channel, 1, nb.type, nb.data, nb.key, v_now, nb.author, nb.digest, nb.format
        FROM numbered nb CROSS JOIN ids
        WHERE nb.write
        RETURNING 1
    )
    SELECT nb.ord,
           (CASE WHEN nb.write THEN 0 WHEN nb.clash THEN 4 WHEN nb.status = 0 THEN 1
                 ELSE nb.status END)::smallint,
           CASE WHEN nb.write THEN ids.v[nb.n] WHEN nb.status IN (1, 4) THEN nb.dup_id END,
           CASE WHEN nb.write THEN v_now WHEN nb.status IN (1, 4) THEN nb.dup_created_at END,
           nb.dup_type, nb.dup_data, nb.dup_updated_at, nb.dup_deleted,
           CASE WHEN NOT nb.write AND nb.status = 0 THEN nb.first_ord END,
           nb.max_event_size,
           nb.dup_author,
           nb.dup_format
    FROM numbered nb CROSS JOIN ids
    ORDER BY nb.ord;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION herald_edit(
    p_channel text,
    p_target  bigint,
    p_delete  boolean,
    p_data    bytea,
    p_author  text,
    p_format  smallint
) RETURNS TABLE (
    status           smallint,
    size_limit       integer,
    entry_id         bigint,
    entry_created_at timestamptz,
    ev_type          text,
    ev_key           text,
    ev_created_at    timestamptz,
    ev_updated_at    timestamptz,
    ev_author        text,
    ev_format        smallint
)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
#variable_conflict use_column
DECLARE
    v_now    timestamptz;
    v_ev     herald_events;
    v_limit  integer;
    v_id     bigint;
    v_format smallint;
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
            NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::smallint;
        RETURN;
    END IF;
    IF v_ev.kind <> 1 OR v_ev.deleted THEN
        RETURN QUERY SELECT 2::smallint, NULL::integer, NULL::bigint, NULL::timestamptz,
            NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::smallint;
        RETURN;
    END IF;

    IF p_delete THEN
        UPDATE herald_events SET data = '', deleted = true WHERE id = p_target;
    ELSE
        SELECT c.max_event_size INTO v_limit FROM herald_channels c
        WHERE c.name = p_channel AND c.deleted_at IS NULL;
        IF octet_length(p_data) > v_limit THEN
            RETURN QUERY SELECT 3::smallint, v_limit, NULL::bigint, NULL::timestamptz,
                NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::smallint;
            RETURN;
        END IF;
        -- A format of 0 keeps the event's.
        v_format := CASE WHEN coalesce(p_format, 0) = 0 THEN v_ev.format ELSE p_format END;
        UPDATE herald_events SET data = p_data, updated_at = v_now, format = v_format WHERE id = p_target;
    END IF;

    INSERT INTO herald_events (channel, kind, target, type, data, created_at, author, format)
    VALUES (p_channel, CASE WHEN p_delete THEN 3 ELSE 2 END, p_target, v_ev.type,
            CASE WHEN p_delete THEN ''::bytea ELSE p_data END, v_now, coalesce(p_author, ''),
            CASE WHEN p_delete THEN 0 ELSE v_format END)
    RETURNING herald_events.id INTO v_id;

    RETURN QUERY SELECT 0::smallint, v_limit, v_id, v_now,
        v_ev.type, v_ev.idempotency_key, v_ev.created_at,
        CASE WHEN p_delete THEN v_ev.updated_at ELSE v_now END,
        v_ev.author,
        CASE WHEN p_delete THEN v_ev.format ELSE v_format END;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION herald_edit(text, bigint, boolean, bytea, text, smallint);
DROP FUNCTION herald_publish(text[], text[], bytea[], text[], text[], bytea[], smallint[], boolean);
ALTER TABLE herald_events DROP COLUMN format;
