-- Authors: who wrote each entry of the log (eventlog.Event.Author), as the
-- server derived it from the caller's credential ('user:<sub>', 'key:<name>',
-- or '' when authentication is off or the caller is anonymous). A published
-- event keeps its author through edits; an updated or deleted entry carries
-- the author of the edit.
--
-- Compatibility: the 0001 functions herald_publish(text[], text[], bytea[],
-- text[], boolean) and herald_edit(text, bigint, boolean, bytea) are left in
-- place, so that instances of the previous release keep working against a
-- schema migrated ahead of a rollout (`herald migrate`); what they write gets
-- the column's default, ''. This release calls the overloads below, which
-- take the authors as one more argument. A later migration may drop the old
-- ones once no instance of the previous release runs.
--
-- Locks and plans: as in 0001_init.sql (the write lock, n = 1; one generic
-- plan per session with seq scans, hash and merge joins disabled).

-- +goose Up

-- A constant default: PostgreSQL 11+ adds the column without rewriting the
-- table.
ALTER TABLE herald_events ADD COLUMN author text NOT NULL DEFAULT '';

-- herald_publish is 0001's herald_publish with p_authors, a parallel array
-- like the others (NULL elements are stored as ''), and one more result
-- column: author, the author of the existing event a duplicate (status 1,
-- dup_of NULL) refers to. The author of an inserted event, or of an earlier
-- input of the batch (dup_of set), is the caller's: it is not returned.
-- +goose StatementBegin
CREATE FUNCTION herald_publish(
    p_channels    text[],
    p_types       text[],
    p_data        bytea[],
    p_keys        text[],
    p_authors     text[],
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
    author     text
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
               nullif(i.key, '') AS key, coalesce(i.author, '') AS author
        FROM unnest(p_channels, p_types, p_data, p_keys, p_authors)
             WITH ORDINALITY AS i(channel, type, data, key, author, ord)
    ),
    classified AS (
        SELECT i.*, c.max_event_size,
               e.id AS dup_id, e.created_at AS dup_created_at, e.type AS dup_type,
               e.data AS dup_data, e.updated_at AS dup_updated_at, e.deleted AS dup_deleted,
               e.author AS dup_author,
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
        INSERT INTO herald_events (id, channel, kind, type, data, idempotency_key, created_at, author)
        OVERRIDING SYSTEM VALUE
        SELECT ids.v[nb.n], nb.channel, 1, nb.type, nb.data, nb.key, v_now, nb.author
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
           nb.max_event_size,
           nb.dup_author
    FROM numbered nb CROSS JOIN ids
    ORDER BY nb.ord;
END;
$$;
-- +goose StatementEnd

-- herald_edit is 0001's herald_edit with p_author, stored on the Updated or
-- Deleted entry it appends (NULL is stored as ''), and one more result
-- column: ev_author, the edited event's own author, which the edit keeps.
-- +goose StatementBegin
CREATE FUNCTION herald_edit(
    p_channel text,
    p_target  bigint,
    p_delete  boolean,
    p_data    bytea,
    p_author  text
) RETURNS TABLE (
    status           smallint,
    size_limit       integer,
    entry_id         bigint,
    entry_created_at timestamptz,
    ev_type          text,
    ev_key           text,
    ev_created_at    timestamptz,
    ev_updated_at    timestamptz,
    ev_author        text
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
            NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz, NULL::text;
        RETURN;
    END IF;
    IF v_ev.kind <> 1 OR v_ev.deleted THEN
        RETURN QUERY SELECT 2::smallint, NULL::integer, NULL::bigint, NULL::timestamptz,
            NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz, NULL::text;
        RETURN;
    END IF;

    IF p_delete THEN
        UPDATE herald_events SET data = '', deleted = true WHERE id = p_target;
    ELSE
        SELECT c.max_event_size INTO v_limit FROM herald_channels c
        WHERE c.name = p_channel AND c.deleted_at IS NULL;
        IF octet_length(p_data) > v_limit THEN
            RETURN QUERY SELECT 3::smallint, v_limit, NULL::bigint, NULL::timestamptz,
                NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz, NULL::text;
            RETURN;
        END IF;
        UPDATE herald_events SET data = p_data, updated_at = v_now WHERE id = p_target;
    END IF;

    INSERT INTO herald_events (channel, kind, target, type, data, created_at, author)
    VALUES (p_channel, CASE WHEN p_delete THEN 3 ELSE 2 END, p_target, v_ev.type,
            CASE WHEN p_delete THEN ''::bytea ELSE p_data END, v_now, coalesce(p_author, ''))
    RETURNING herald_events.id INTO v_id;

    RETURN QUERY SELECT 0::smallint, v_limit, v_id, v_now,
        v_ev.type, v_ev.idempotency_key, v_ev.created_at,
        CASE WHEN p_delete THEN v_ev.updated_at ELSE v_now END,
        v_ev.author;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION herald_edit(text, bigint, boolean, bytea, text);
DROP FUNCTION herald_publish(text[], text[], bytea[], text[], text[], boolean);
ALTER TABLE herald_events DROP COLUMN author;
