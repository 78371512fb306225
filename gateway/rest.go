package gateway

import "net/http"

func (g *Gateway) registerREST(mux *http.ServeMux) {}
