-- Per-channel sequence numbers and event tags.
--
-- seq: every entry of a channel (published, UPDATED and DELETED entries
-- alike) gets 1, 2, 3, ... within its channel, gap-free and in the order of
-- positions, so that a client can show "message #N", detect a gap per
-- channel and address history by seq. Every insert into herald_events
-- holds the write lock (n = 1, see 0001_init.sql), so numbering under it
-- makes seq and position order agree.
--
-- The next seq of a channel is 1 + the greater of the highest seq among
-- its entries (one backward step on the (channel, seq) index, once per
-- channel of a batch) and
-- herald_channels.seq, the highest seq of the channel's entries that were
-- removed (raised by the statement trigger herald_events_seq_floor
-- whenever entries are deleted: retention, channel deletion). So the
-- writer reads, and never writes, a per-channel counter: no row update
-- per channel per batch (measured in docs/benchmarks.md). A channel
-- trimmed to nothing, or deleted and created again, goes on counting
-- where it stopped (a client holding #N sees the gap, as it should: the
-- events are gone).
--
-- Retention does not hold the write lock, but it deletes entries and
-- raises herald_channels.seq in one transaction: a writer's snapshot sees
-- either the entries or the raised floor, never neither.
--
-- How seq is assigned:
--   * the batched writer (herald_publish below, the overload with tags)
--     numbers a whole batch in its one statement: each written row gets
--     its channel's next seq plus its rank among the batch's rows of that
--     channel;
--   * every other insert (herald_edit's UPDATED/DELETED entries, the
--     outbox drain, and instances of the previous release during a
--     rollout, whose herald_publish overloads do not set seq) leaves seq
--     NULL and the trigger herald_events_seq numbers the row the same way
--     (it sees the rows its own statement inserted before).
--
-- tags: a small string map set at publish ({"room":"42"}), NULL when none;
-- subscriptions filter on it. UPDATED and DELETED entries carry the tags
-- of the event they change (the trigger copies them), so that a filtered
-- subscription receives the edits of the events it receives.
--
-- Backfill: entries already in the log are numbered in position order per
-- channel (what retention already removed is not counted). It runs under
-- the write lock: no publish of an old instance interleaves.
--
-- Locks and plans: as in 0001_init.sql.

-- +goose Up
SELECT pg_advisory_xact_lock(hashtext(current_schema()), 1);

ALTER TABLE herald_channels ADD COLUMN seq bigint NOT NULL DEFAULT 0;
ALTER TABLE herald_events ADD COLUMN seq bigint;
ALTER TABLE herald_events ADD COLUMN tags jsonb;

UPDATE herald_events e SET seq = n.seq
FROM (SELECT id, row_number() OVER (PARTITION BY channel ORDER BY id) AS seq FROM herald_events) n
WHERE e.id = n.id;

-- History addressed by seq (ListEvents from_seq).
CREATE INDEX herald_events_channel_seq ON herald_events (channel, seq);

-- herald_events_seq numbers a row inserted without a seq (see above).
-- +goose StatementBegin
CREATE FUNCTION herald_events_seq() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.seq := 1 + greatest(
        coalesce((SELECT c.seq FROM herald_channels c WHERE c.name = NEW.channel), 0),
        coalesce((SELECT max(e.seq) FROM herald_events e WHERE e.channel = NEW.channel), 0));
    IF NEW.target <> 0 AND NEW.tags IS NULL THEN
        SELECT t.tags INTO NEW.tags FROM herald_events t WHERE t.id = NEW.target;
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER herald_events_seq BEFORE INSERT ON herald_events
    FOR EACH ROW WHEN (NEW.seq IS NULL) EXECUTE FUNCTION herald_events_seq();

-- herald_events_seq_floor keeps, per channel, the highest seq of entries
-- that were deleted (once per DELETE statement, from its transition
-- table).
-- +goose StatementBegin
CREATE FUNCTION herald_events_seq_floor() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE herald_channels c SET seq = g.seq
    FROM (SELECT o.channel, max(o.seq) AS seq FROM herald_seq_gone o GROUP BY o.channel) g
    WHERE c.name = g.channel AND c.seq < g.seq;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER herald_events_seq_floor AFTER DELETE ON herald_events
    REFERENCING OLD TABLE AS herald_seq_gone
    FOR EACH STATEMENT EXECUTE FUNCTION herald_events_seq_floor();

-- herald_publish is 0004's herald_publish with p_tags (each a JSON object
-- of strings as text, NULL for none) and two more columns in what it
-- returns: seq (the new event's, or the earlier event's for a duplicate)
-- and tags (the earlier event's, for a duplicate).
-- +goose StatementBegin
CREATE FUNCTION herald_publish(
    p_channels    text[],
    p_types       text[],
    p_data        bytea[],
    p_keys        text[],
    p_authors     text[],
    p_digests     bytea[],
    p_formats     smallint[],
    p_tags        text[],
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
    format     smallint,
    seq        bigint,
    tags       jsonb
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
    v_now := clock_timestamp();

    IF p_auto_create THEN
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
               coalesce(i.format, 0)::smallint AS format,
               i.tags::jsonb AS tags
        FROM unnest(p_channels, p_types, p_data, p_keys, p_authors, p_digests, p_formats, p_tags)
             WITH ORDINALITY AS i(channel, type, data, key, author, digest, format, tags, ord)
    ),
    classified AS (
        SELECT i.*, c.max_event_size,
               greatest(c.seq, b.last_seq) AS chan_seq,
               e.id AS dup_id, e.created_at AS dup_created_at, e.type AS dup_type,
               e.data AS dup_data, e.updated_at AS dup_updated_at, e.deleted AS dup_deleted,
               e.author AS dup_author, e.format AS dup_format, e.seq AS dup_seq, e.tags AS dup_tags,
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
        -- The highest seq of each channel of the batch: one index lookup
        -- per channel, not per event.
        LEFT JOIN (SELECT d.channel,
                          coalesce((SELECT max(s.seq) FROM herald_events s WHERE s.channel = d.channel), 0) AS last_seq
                   FROM (SELECT DISTINCT x.channel FROM input x) d) b ON b.channel = i.channel
    ),
    ranked AS (
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
        -- n: 1-based rank of the input among those written; cn: the same
        -- within its channel (its seq is the channel's counter plus cn).
        SELECT f.*, count(*) FILTER (WHERE f.write) OVER (ORDER BY f.ord) AS n,
               count(*) FILTER (WHERE f.write) OVER (PARTITION BY f.channel ORDER BY f.ord) AS cn
        FROM flagged f
    ),
    ids AS (
        SELECT array_agg(s.v ORDER BY s.v) AS v
        FROM (SELECT nextval('herald_events_id_seq') AS v FROM numbered WHERE numbered.write) s
    ),
    ins AS (
        INSERT INTO herald_events (id, channel, kind, type, data, idempotency_key, created_at, author,
                                   idempotency_digest, format, seq, tags)
        OVERRIDING SYSTEM VALUE
        SELECT ids.v[nb.n], nb.channel, 1, nb.type, nb.data, nb.key, v_now, nb.author, nb.digest, nb.format,
               nb.chan_seq + nb.cn, nb.tags
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
           nb.dup_format,
           CASE WHEN nb.write THEN nb.chan_seq + nb.cn WHEN nb.status IN (1, 4) THEN nb.dup_seq END,
           nb.dup_tags
    FROM numbered nb CROSS JOIN ids
    ORDER BY nb.ord;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION herald_publish(text[], text[], bytea[], text[], text[], bytea[], smallint[], text[], boolean);
DROP TRIGGER herald_events_seq_floor ON herald_events;
DROP FUNCTION herald_events_seq_floor();
DROP TRIGGER herald_events_seq ON herald_events;
DROP FUNCTION herald_events_seq();
DROP INDEX herald_events_channel_seq;
ALTER TABLE herald_events DROP COLUMN tags;
ALTER TABLE herald_events DROP COLUMN seq;
ALTER TABLE herald_channels DROP COLUMN seq;
