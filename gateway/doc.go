// Package gateway is where the browser gateway goes: WebSocket (carrying the
// messages of the Connect RPC through services.Session), Server-Sent Events,
// REST history and long-poll, each a thin adapter over the fanout
// subscription core. It holds no code yet; see the gateway issue.
package gateway
