package gateway

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/eventlog/eventlogtest"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/services"
)

// logGateway is a gateway over one event log, for the REST fuzz targets to
// run what they decode: a request the gateway accepts must be served alike
// by the embedded log and by PostgreSQL, and an internal error from either
// (the database refusing what validation let through) is a finding.
type logGateway struct {
	name string
	g    *Gateway
}

// logGateways opens a gateway over a memory log and one over a PostgreSQL
// log, with running hubs, until f ends.
func logGateways(f *testing.F) []logGateway {
	f.Helper()
	quiet := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	f.Cleanup(func() { cancel(); wg.Wait() })
	var out []logGateway
	for _, l := range eventlogtest.Each(f, eventlog.Options{AutoCreate: true}) {
		hub := fanout.NewHub(l.Log, fanout.Options{Logger: quiet})
		wg.Go(func() { _ = hub.Run(ctx) })
		<-hub.Ready()
		app, err := services.New(l.Log, hub, services.Config{Logger: quiet})
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, logGateway{name: l.Name, g: New(app, Config{Logger: quiet})})
	}
	return out
}

// serveOnLogs calls rt's service method with msg on every gateway, without
// the long-poll wait (which only holds the request), and fails unless they
// all answer with the same code and error text, none of them internal.
func serveOnLogs(t *testing.T, gs []logGateway, rt *route, msg proto.Message) {
	t.Helper()
	msg = proto.Clone(msg)
	switch m := msg.(type) {
	case *heraldv1.ListEventsRequest:
		m.Wait = nil
	case *heraldv1.PollRequest:
		m.Wait = nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var first error
	for i, lg := range gs {
		_, err := rt.call(ctx, lg.g, msg)
		if err != nil {
			switch connect.CodeOf(err) {
			case connect.CodeInternal, connect.CodeUnknown, connect.CodeUnavailable:
				t.Fatalf("%s on %s: %v answered %v", rt.op, lg.name, msg, err)
			}
		}
		if i == 0 {
			first = err
		} else if (err == nil) != (first == nil) || err != nil && err.Error() != first.Error() {
			t.Fatalf("%s: %v answered %v on %s but %v on %s", rt.op, msg, first, gs[0].name, err, lg.name)
		}
	}
}
