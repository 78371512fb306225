// Package console owns the admin console: a web page, served on the admin
// listener, that shows an instance and its deployment live through the
// AdminService (charts of connections, events in and out, delivery lag,
// writer batches and hub lag; the instances; the channels; this
// instance's connections, with a way to disconnect one; a channel tail).
// The charts use uPlot, vendored under static/vendor/uplot with its
// licence; nothing is loaded from elsewhere.
package console

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Handler serves the console's files (index.html at "/").
func Handler() http.Handler {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	fsrv := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
		w.Header().Set("X-Frame-Options", "DENY")
		fsrv.ServeHTTP(w, r)
	})
}
