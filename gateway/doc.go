// Package gateway serves Herald to browsers and plain HTTP clients on the
// same port as gRPC and Connect:
//
//   - WebSocket (/v1/ws): the messages of the bidirectional Connect RPC,
//     protojson in text frames or binary protobuf in binary frames, run by
//     services.Session exactly as the RPC runs them.
//   - Server-Sent Events (/v1/sse): one subscription of one or more
//     channels; the SSE id is the resume position.
//   - REST (/v1/channels/..., /v1/events): publish, history, channel CRUD
//     and long-poll, each route calling the same service method an RPC
//     calls, described by an OpenAPI document built from the same table.
//   - The embedded browser client and demo pages (package web).
//
// Every transport is a thin adapter over the fanout subscription core
// (replay from cursor, then live, dedupe by position); none re-implements
// it. The gateway owns origin checks (CORS and the WebSocket Origin
// allow-list), the wire encodings and their per-event encode cache.
package gateway
