// Package web holds the browser side shipped inside the herald binary: the
// dependency-free JavaScript client (herald.js, an ES module) and the demo
// pages (chat over WebSocket, live feed over SSE, history browser over
// REST). The gateway serves them; nothing here talks to the server itself.
package web

import "embed"

// Files are the embedded files: herald.js at the root, pages under demo/.
//
//go:embed herald.js demo
var Files embed.FS
