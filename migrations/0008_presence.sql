-- Presence: one row per open subscription in a presence-enabled channel,
-- written by the instance that holds the subscription (instance is its
-- herald_instances id). Joins and leaves are announced by a NOTIFY in the
-- same statement as the insert or delete, so a notification means the row
-- changed, and a leave is sent by whoever deleted the row: the instance
-- itself on unsubscribe, or, after the instance stopped heartbeating (it
-- died), any other instance.
--
-- Compatibility: a new table only; instances of the previous release
-- ignore it.

-- +goose Up
CREATE TABLE herald_presence (
    channel   text        NOT NULL,
    client_id text        NOT NULL,
    user_name text        NOT NULL DEFAULT '',
    info      text        NOT NULL DEFAULT '',
    instance  text        NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, client_id)
);
CREATE INDEX herald_presence_instance ON herald_presence (instance);

-- +goose Down
DROP TABLE herald_presence;
