// Package gateway serves Herald to browsers and plain HTTP clients on the
// same port as gRPC and Connect. It holds the browser adapters only, each a
// thin layer over services.App:
//
//   - WebSocket (/v1/ws): the messages of the bidirectional Connect RPC,
//     protojson in text frames or binary protobuf in binary frames, run by
//     services.Session.Serve exactly as the RPC runs them.
//   - Server-Sent Events (/v1/sse): a loop over services.Open; the SSE id
//     is the resume position.
//   - REST (/v1/channels/..., /v1/events): publish, history, channel CRUD
//     and long-poll, each route calling the App method an RPC calls,
//     described by an OpenAPI document built from the same table.
//   - CORS and the Host allow-list for every transport, and WriteError,
//     which answers a refusal in the caller's own protocol.
//   - The embedded browser client and demo pages (package web).
//
// The gateway imports services, the generated API and the embedded pages
// (web) only: admission, authorization, replay and live delivery, end
// reasons and the events' encodings are the application's.
//
// # Concurrency
//
// The WebSocket is RFC 6455 implemented here over the hijacked connection
// (wsframe.go: framing and every check the RFC asks of a server; ws.go: the
// handshake and the connection). After the upgrade the HTTP handler
// returns, so net/http's buffers are freed. Each WebSocket then runs the
// session on its own goroutine (Session.Serve, whose reader calls the
// connection's recv), a writer goroutine only while frames are queued
// (it writes all queued frames with one write), and a ping timer; an idle
// connection holds no buffer. When the session ends the connection closes
// with the code that says why, within WriteTimeout. Drain waits for every
// WebSocket (the HTTP server does not track hijacked connections); Kill
// drops them.
// SSE and REST run on the HTTP server's goroutines.
package gateway
