// Package lbtest holds the end-to-end test of Herald behind a load
// balancer: two `herald serve` processes on one PostgreSQL schema behind a
// real nginx, with WebSocket and SSE subscribers and REST publishers going
// through it while one instance is killed (SIGKILL), restarted and another
// stopped (SIGTERM).
//
// It has no code of its own. The test builds the herald binary and talks
// to it only over the public wire protocols (WebSocket frames, SSE, REST
// JSON, the messages of proto/herald/v1), so it keeps working however the
// packages behind them are arranged. nginx runs from the configuration in
// docs/operations.md, which the test reads, so the documented example is
// the tested one. Without nginx the test is skipped (scripts/test installs
// Debian's nginx-light when it runs as root with apt-get).
package lbtest
