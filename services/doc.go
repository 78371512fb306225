// Package services is Herald's application: what every transport calls,
// and the connect-go handlers that serve it over gRPC, gRPC-Web and
// Connect. An App, built from one Config, owns:
//
//   - admission, one path for every transport: Open (SSE, Subscribe,
//     long-poll) and NewSession (WebSocket, the Connect RPC) check the
//     channel count, authorize every channel by the caller's identity and
//     its namespace's policy, take a connection slot, and end what a
//     credential opened when it expires;
//   - publishing: Publish (one namespace lookup, the per-user rate,
//     channels created with their namespace's settings), and a session's
//     ordered, batched publishes;
//   - the bidirectional lifecycle: Session.Serve, run by the Connect RPC
//     and the WebSocket alike;
//   - history and channel management, one method per RPC;
//   - errors: this is the only package that turns errors into connect
//     codes (errors.go); End says how a stream ended and where to resume.
//
// Transports receive events as Items (streams) and Frames (sessions) whose
// encodings are made once per event (internal/wire) and shared by every
// subscriber; the RPC codecs (codec.go) write them without encoding again.
// Requests are validated against the proto's protovalidate rules
// (Interceptor for the RPCs, Validate for other transports).
//
// # Concurrency
//
// App's methods are safe for concurrent use and start no goroutine that
// outlives them, except Session.Serve's (see Session). A Stream is read by
// one goroutine; Close may be called from any.
package services
