-- Deletion erases every version of an event's data, and an idempotency key
-- reused for a different event is refused.
--
-- Erasure: deleting a published event (herald_edit with p_delete, any
-- overload) now also erases the data of each of its UPDATED entries and
-- marks them deleted, in the same transaction: a trigger on the event's
-- `deleted` flag does it, so that every caller of every herald_edit
-- overload (instances of the previous release during a rollout included)
-- erases alike. The migration scrubs the UPDATED entries of events deleted
-- before it ran. What deletion keeps: the entries themselves, their kind,
-- target, type, author, times and positions.
--
-- Conflicts: herald_events.idempotency_digest holds sha256 of the data
-- first published under the row's idempotency key (NULL without a key,
-- and once the event is deleted). The herald_publish overload below takes
-- the inputs' digests (computed by the caller, outside the write lock) and
-- answers a key reused with another type or digest with status 4.
--
-- Compatibility: 0002's herald_publish(text[], text[], bytea[], text[],
-- text[], boolean) stays as it was for instances of the previous release:
-- what they publish during a rollout gets no digest, and a later reuse of
-- such a key is compared by type only. Events published before this
-- migration get the digest of their data when it was never updated (an
-- updated event's first data is gone: its key is compared by type only).
--
-- Locks and plans: as in 0001_init.sql.

-- +goose Up

ALTER TABLE herald_events ADD COLUMN idempotency_digest bytea;

-- Finds the UPDATED entries of an event when it is deleted. Partial: only
-- updates pay for it. (A plain CREATE INDEX blocks writes while it scans
-- the table once.)
CREATE INDEX herald_events_updates ON herald_events (target) WHERE kind = 2;

UPDATE herald_events SET idempotency_digest = sha256(data)
WHERE idempotency_key IS NOT NULL AND kind = 1 AND NOT deleted AND updated_at IS NULL;

-- herald_erase_deleted runs when a published event becomes deleted: it
-- erases the data of the event's UPDATED entries, marks them deleted, and
-- forgets the event's idempotency digest.
-- +goose StatementBegin
CREATE FUNCTION herald_erase_deleted() RETURNS trigger
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    UPDATE herald_events SET data = '', deleted = true
    WHERE kind = 2 AND target = NEW.id AND channel = NEW.channel;
    NEW.idempotency_digest := NULL;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

-- BEFORE, so that the event's own row is written once with the digest
-- gone. Only statements that set `deleted` fire it: publishes and updates
-- do not. The UPDATED entries it marks are kind 2: it does not fire again.
CREATE TRIGGER herald_erase_deleted
    BEFORE UPDATE OF deleted ON herald_events
    FOR EACH ROW
    WHEN (NEW.kind = 1 AND NEW.deleted AND NOT OLD.deleted)
    EXECUTE FUNCTION herald_erase_deleted();

-- Events deleted before this migration.
UPDATE herald_events u SET data = '', deleted = true
WHERE u.kind = 2 AND NOT u.deleted
  AND EXISTS (SELECT 1 FROM herald_events d
              WHERE d.kind = 3 AND d.channel = u.channel AND d.target = u.target);

-- herald_publish is 0002's herald_publish with p_digests, a parallel array
-- (sha256 of each keyed input's data; NULL for inputs without a key), and
-- one more status:
--   4 conflict: the key was used in the channel for an event of another
--     type or data digest: an existing event (id and the duplicate columns
--     describe it) or an earlier input of this batch (dup_of is its ord).
-- The first written input of a (channel, key) decides for the later ones of
-- the batch: the same type and digest make them duplicates (status 1),
-- anything else a conflict.
-- +goose StatementBegin
CREATE FUNCTION herald_publish(
    p_channels    text[],
    p_types       text[],
    p_data        bytea[],
    p_keys        text[],
    p_authors     text[],
    p_digests     bytea[],
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
               nullif(i.key, '') AS key, coalesce(i.author, '') AS author,
               CASE WHEN nullif(i.key, '') IS NOT NULL THEN i.digest END AS digest
        FROM unnest(p_channels, p_types, p_data, p_keys, p_authors, p_digests)
             WITH ORDINALITY AS i(channel, type, data, key, author, digest, ord)
    ),
    classified AS (
        SELECT i.*, c.max_event_size,
               e.id AS dup_id, e.created_at AS dup_created_at, e.type AS dup_type,
               e.data AS dup_data, e.updated_at AS dup_updated_at, e.deleted AS dup_deleted,
               e.author AS dup_author,
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
                                   idempotency_digest)
        OVERRIDING SYSTEM VALUE
        SELECT ids.v[nb.n], nb.channel, 1, nb.type, nb.data, nb.key, v_now, nb.author, nb.digest
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
           nb.dup_author
    FROM numbered nb CROSS JOIN ids
    ORDER BY nb.ord;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION herald_publish(text[], text[], bytea[], text[], text[], bytea[], boolean);
-- Erased data stays erased.
DROP TRIGGER herald_erase_deleted ON herald_events;
DROP FUNCTION herald_erase_deleted();
DROP INDEX herald_events_updates;
ALTER TABLE herald_events DROP COLUMN idempotency_digest;
