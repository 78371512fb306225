package server_test

import (
	"net/http"
	"testing"
)

// TestUnroutedV1: a path under /v1/ that no route serves, or a method a
// route does not take, is answered in the one JSON error shape like every
// other refusal, pointing to the API's description.
func TestUnroutedV1(t *testing.T) {
	t.Parallel()
	in := memoryInstance(t)
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
		words        []string
	}{
		{http.MethodGet, "/v1/", http.StatusNotFound, "not_found", []string{"GET /v1/", "/v1/openapi.json"}},
		{http.MethodGet, "/v1/nope", http.StatusNotFound, "not_found", []string{"/v1/nope", "/v1/openapi.json"}},
		{http.MethodPost, "/v1/chanels", http.StatusNotFound, "not_found", []string{"POST /v1/chanels", "/v1/openapi.json"}},
		{http.MethodGet, "/v1/events/extra", http.StatusNotFound, "not_found", []string{"/v1/openapi.json"}},
		{http.MethodPost, "/v1/sse", http.StatusMethodNotAllowed, "unimplemented", []string{"POST", "GET"}},
		{http.MethodPut, "/v1/ws", http.StatusMethodNotAllowed, "unimplemented", []string{"PUT", "GET"}},
		{http.MethodDelete, "/v1/events", http.StatusMethodNotAllowed, "unimplemented", []string{"DELETE", "GET"}},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			r := restCall(t, tc.method, in.base+tc.path, "", nil)
			r.fails(t, tc.status, tc.code, tc.words...)
			if tc.status == http.StatusMethodNotAllowed && r.header.Get("Allow") == "" {
				t.Fatalf("405 without Allow")
			}
		})
	}
}
