-- The planner assumes many channels.
--
-- A generic plan (what a prepared statement ends up with) estimates
-- "channel = $1" as one row in n_distinct(channel). With few channels in
-- the statistics (one busy channel and a handful of quiet ones), that is a
-- large share of the table, and the planner then reads a quiet channel's
-- entries after a cursor by walking the primary key from the cursor and
-- filtering every other channel's entries out: measured on 200,000 entries
-- of one channel and 3 of another, a replay of the quiet one took 40 ms
-- instead of 0.06 ms, growing with the log. Fixing n_distinct at 100,000
-- makes every "channel = ..." lookup (replays, history, retention) take the
-- (channel, id) index, which is right for a busy channel too: it starts at
-- the cursor. TestPostgresQuietChannelPlans checks the plans.
--
-- Compatibility: statistics only; takes no lock that blocks writers.

-- +goose Up
ALTER TABLE herald_events ALTER COLUMN channel SET (n_distinct = 100000);
ANALYZE herald_events;

-- +goose Down
ALTER TABLE herald_events ALTER COLUMN channel RESET (n_distinct);
ANALYZE herald_events;
