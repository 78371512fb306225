// Package web holds the browser side shipped inside the herald binary: the
// dependency-free JavaScript client (herald.js, an ES module) and the demo
// pages (chat over WebSocket, live feed over SSE, history browser over
// REST). The gateway serves them; nothing here talks to the server itself.
package web

import "embed"

// Files are the embedded files: herald.js and its type declarations
// (herald.d.ts) at the root, pages under demo/. package.json makes web/ an
// npm package of herald.js and herald.d.ts (npm pack); it is not served.
//
//go:embed herald.js herald.d.ts demo
var Files embed.FS
