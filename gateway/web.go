package gateway

import (
	"net/http"

	"github.com/heraldrt/herald/web"
)

// registerWeb serves the embedded JavaScript client and demo pages.
func registerWeb(mux *http.ServeMux) {
	files := http.FileServerFS(web.Files)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/demo/", http.StatusFound)
	})
	mux.Handle("GET /herald.js", noCache(files))
	mux.Handle("GET /herald.d.ts", noCache(typeScript(files)))
	mux.Handle("GET /demo/", noCache(files))
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
