-- The writer remembers each channel's last seq, and seq is indexed
-- sparsely.
--
-- 0007 made numbering cost the batch statement ~50% over 64 channels
-- (docs/benchmarks.md, "Per-channel sequence numbers"), in two parts: the
-- lookup of every channel's last seq, and the (channel, seq) index entry of
-- every event. This migration removes both from the common case.
--
-- The caller's last seqs. A writer that wrote the newest entry of the log
-- knows every channel's last seq as of that entry, so the herald_publish
-- overload below takes them from the caller:
--   * p_last_seqs: for each input, the last seq the caller knows of its
--     channel (NULL when it does not know it; that channel is looked up);
--   * p_last_id: the position of the newest entry the caller wrote (0 for
--     none). The caller's seqs are used only if that entry is still the
--     newest of the log, checked under the write lock (one step on the
--     primary key). Every insert holds the write lock and draws a higher
--     id, so equality means nobody inserted since: not another instance's
--     writer, herald_edit, the outbox drain or an instance of the previous
--     release. If the newest entry was deleted (its channel deleted), the
--     check fails too, which is safe.
--   * Deletions cannot make a remembered seq too low: the next seq is still
--     1 + greatest(remembered, herald_channels.seq), and deletions raise
--     herald_channels.seq (0007's herald_events_seq_floor).
--   * seq_cached, in every row returned, says whether the caller's seqs
--     were used. When false, the caller must forget all it remembers (the
--     entries of channels outside this batch may be stale) and then
--     remember this batch's.
--
-- The sparse index. Within a channel seq grows with id, so a channel's
-- last seq is the seq of its newest entry (a step back on the
-- (channel, id) index), and history from seq N starts at or after the
-- entry with the greatest seq <= N that is 1 mod 64, which the partial
-- index herald_events_channel_seq_1mod64 finds (ListEvents from_seq; see
-- History in internal/eventlog/postgres_query.go). That index holds one
-- event in 64: what the full (channel, seq) index cost per event is gone,
-- and from_seq reads at most 63 entries before N.
--
-- Everything that looked up max(seq) (0007's trigger and herald_publish
-- overload) now takes the newest entry's seq instead; 0007's overload,
-- kept for instances of the previous release during a rollout, calls this
-- one without remembered seqs.
--
-- Locks and plans: as in 0001_init.sql.

-- +goose Up
SELECT pg_advisory_xact_lock(hashtext(current_schema()), 1);

DROP INDEX herald_events_channel_seq;
CREATE INDEX herald_events_channel_seq_1mod64 ON herald_events (channel, seq) WHERE seq % 64 = 1;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION herald_events_seq() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.seq := 1 + greatest(
        coalesce((SELECT c.seq FROM herald_channels c WHERE c.name = NEW.channel), 0),
        coalesce((SELECT e.seq FROM herald_events e WHERE e.channel = NEW.channel
                  ORDER BY e.id DESC LIMIT 1), 0));
    IF NEW.target <> 0 AND NEW.tags IS NULL THEN
        SELECT t.tags INTO NEW.tags FROM herald_events t WHERE t.id = NEW.target;
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

-- herald_publish: 0007's, with the caller's last seqs (above) and
-- seq_cached in what it returns.
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
    p_last_seqs   bigint[],
    p_last_id     bigint,
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
    tags       jsonb,
    seq_cached boolean
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
    v_cached boolean;
    v_last   bigint[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), 1);
    v_now := clock_timestamp();
    -- The caller's last seqs hold only if the newest entry is still the
    -- one it wrote last: nothing was inserted since (every insert holds
    -- the lock taken above and draws a higher id).
    v_cached := coalesce(p_last_id > 0 AND
        p_last_id = (SELECT e.id FROM herald_events e ORDER BY e.id DESC LIMIT 1), false);
    -- v_last: each input's channel's last seq. What the caller did not
    -- know (or all of it, when its seqs do not hold) is looked up, once
    -- per channel, in a statement of its own, so that the common case
    -- (the caller knew every channel) reads nothing per channel.
    v_last := CASE WHEN v_cached THEN p_last_seqs END;
    IF v_last IS NULL OR cardinality(v_last) <> cardinality(p_channels)
       OR array_position(v_last, NULL) IS NOT NULL THEN
        v_last := CASE WHEN cardinality(v_last) = cardinality(p_channels) THEN v_last
                       ELSE array_fill(NULL::bigint, ARRAY[cardinality(p_channels)]) END;
        SELECT array_agg(coalesce(u.last_seq, k.last_seq, 0) ORDER BY u.ord) INTO v_last
        FROM unnest(p_channels, v_last) WITH ORDINALITY AS u(channel, last_seq, ord)
        LEFT JOIN (SELECT d.channel,
                          (SELECT s.seq FROM herald_events s WHERE s.channel = d.channel
                           ORDER BY s.id DESC LIMIT 1) AS last_seq
                   FROM (SELECT DISTINCT x.channel
                         FROM unnest(p_channels, v_last) AS x(channel, last_seq)
                         WHERE x.last_seq IS NULL) d) k
            ON k.channel = u.channel;
    END IF;

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
               i.tags::jsonb AS tags,
               i.last_seq
        FROM unnest(p_channels, p_types, p_data, p_keys, p_authors, p_digests, p_formats, p_tags, v_last)
             WITH ORDINALITY AS i(channel, type, data, key, author, digest, format, tags, last_seq, ord)
    ),
    classified AS (
        SELECT i.*, c.max_event_size,
               greatest(c.seq, i.last_seq) AS chan_seq,
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
           nb.dup_tags,
           v_cached
    FROM numbered nb CROSS JOIN ids
    ORDER BY nb.ord;
END;
$$;
-- +goose StatementEnd

-- 0007's overload: this one, remembering nothing.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION herald_publish(
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
LANGUAGE sql
AS $$
    SELECT p.ord, p.status, p.id, p.created_at, p.type, p.data, p.updated_at, p.deleted, p.dup_of,
           p.size_limit, p.author, p.format, p.seq, p.tags
    FROM herald_publish(p_channels, p_types, p_data, p_keys, p_authors, p_digests, p_formats, p_tags,
                        NULL::bigint[], 0::bigint, p_auto_create) p;
$$;
-- +goose StatementEnd

-- +goose Down
SELECT pg_advisory_xact_lock(hashtext(current_schema()), 1);

-- 0007's definitions, as they were.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION herald_publish(
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

DROP FUNCTION herald_publish(text[], text[], bytea[], text[], text[], bytea[], smallint[], text[], bigint[], bigint, boolean);

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION herald_events_seq() RETURNS trigger
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

DROP INDEX herald_events_channel_seq_1mod64;
CREATE INDEX herald_events_channel_seq ON herald_events (channel, seq);
