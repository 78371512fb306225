// The JavaScript client (being written).
