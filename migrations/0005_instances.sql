-- Instances: each running herald announces itself here with a heartbeat
-- (every few seconds), so that the admin console of any instance shows all
-- of them with their connection counts, version and uptime. A row whose
-- heartbeat is older than three intervals is an instance that died; rows
-- are removed by their instance on a graceful stop, and old ones by any
-- instance's heartbeat.
--
-- Compatibility: a new table only; instances of the previous release
-- ignore it.

-- +goose Up
CREATE TABLE herald_instances (
    id            text        PRIMARY KEY,
    hostname      text        NOT NULL,
    addr          text        NOT NULL,
    admin_addr    text        NOT NULL DEFAULT '',
    version       text        NOT NULL DEFAULT '',
    started_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL,
    connections   bigint      NOT NULL DEFAULT 0,
    subscriptions bigint      NOT NULL DEFAULT 0
);

-- +goose Down
DROP TABLE herald_instances;
