package gateway

import (
	"fmt"
	"net/http"

	"connectrpc.com/connect"

	"github.com/heraldrt/herald/web"
)

// registerWeb serves the embedded JavaScript client, the demo pages, the
// favicon, and the AsyncAPI document (which has no route in the REST
// table: it describes the streams, not REST).
func registerWeb(mux *http.ServeMux) {
	files := http.FileServerFS(web.Files)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/demo/", http.StatusFound)
	})
	mux.Handle("GET /herald.js", noCache(files))
	mux.Handle("GET /herald.d.ts", noCache(typeScript(files)))
	mux.Handle("GET /demo/", noCache(files))
	// Browsers ask for /favicon.ico on any page without an icon link (the
	// JSON documents, for one); the demo pages link demo/favicon.svg.
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/svg+xml")
		w.Header().Set("Cache-Control", "max-age=86400")
		http.ServeFileFS(w, r, web.Files, "demo/favicon.svg")
	})
	mux.HandleFunc("GET "+asyncAPIPath, serveAsyncAPI)
	mux.HandleFunc(asyncAPIPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "GET, HEAD")
		writeErrorStatus(w, http.StatusMethodNotAllowed, connect.NewError(connect.CodeUnimplemented,
			fmt.Errorf("method %s is not allowed here; allowed: GET, HEAD", r.Method)))
	})
}

// typeScript labels TypeScript declarations (by extension ".ts" would be
// served as an MPEG transport stream).
func typeScript(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/typescript; charset=utf-8")
		h.ServeHTTP(w, r)
	})
}

// noCache makes browsers revalidate: the files change with the binary.
func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}
