// Package services implements Herald's RPC API (proto/herald/v1) as
// connect-go handlers served over gRPC, gRPC-Web and Connect on one port:
// EventService (publish, subscribe, bidirectional connect), HistoryService
// and ChannelService.
//
// Handlers are thin: requests are validated by protovalidate rules from the
// proto (Interceptor), events go to the eventlog and come back through the
// fanout subscription core. This is the only package that turns errors into
// connect codes (see errors.go); the browser gateway maps those codes to
// HTTP statuses and close codes.
//
// # Concurrency
//
// Handlers run on the server's goroutines. A Connect stream runs one
// receiving goroutine, one publishing goroutine (which keeps the stream's
// publishes in order) and one goroutine per open subscription; all of them
// end before the handler returns. Sends on a stream are serialised by a
// mutex.
package services
