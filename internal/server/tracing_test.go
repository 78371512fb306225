package server_test

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/server"
)

// TestTracingPublish: a publish over each RPC protocol carrying a W3C
// traceparent shows as one trace: the RPC's server span (a child of the
// caller's), validation and append under it, the writer's batch under the
// append (and linked to it), and the database query that commits under
// the batch. Spans go to the SDK's in-memory exporter.
func TestTracingPublish(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	dsn, schema := database(t)
	in := startInstance(t, server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}, TracerProvider: tp})

	for i, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			traceID := strings.Repeat("0", 30) + string(rune('a'+i)) + "1"
			parentID := "00f067aa0ba902b7"
			c := newClients(in.base, p.http(), p.opts...)
			req := connect.NewRequest(&heraldv1.PublishRequest{Channel: "traced", Data: []byte(`"x"`)})
			req.Header().Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
			if _, err := c.events.Publish(t.Context(), req); err != nil {
				t.Fatal(err)
			}
			want, _ := trace.TraceIDFromHex(traceID)
			var spans tracetest.SpanStubs
			byName := map[string]tracetest.SpanStub{}
			waitFor(t, func() bool { // the server span ends after the response is written, the batch's after its answers
				spans, byName = nil, map[string]tracetest.SpanStub{}
				for _, s := range exp.GetSpans() {
					if s.SpanContext.TraceID() == want {
						spans = append(spans, s)
						byName[s.Name] = s
					}
				}
				_, ok := byName["herald.v1.EventService/Publish"]
				_, okB := byName["herald.writer.batch"]
				return ok && okB
			})
			rpc := byName["herald.v1.EventService/Publish"]
			validate, okV := byName["herald.validate"]
			appendSpan, okA := byName["herald.append"]
			batch, okB := byName["herald.writer.batch"]
			var query tracetest.SpanStub
			for _, s := range spans {
				if s.Parent.SpanID() == batch.SpanContext.SpanID() && strings.Contains(strings.ToLower(s.Name), "select") {
					query = s
				}
			}
			names := make([]string, len(spans))
			for i, s := range spans {
				names[i] = s.Name
			}
			switch {
			case rpc.Parent.SpanID().String() != parentID:
				t.Errorf("RPC span's parent %v, want the caller's %s", rpc.Parent.SpanID(), parentID)
			case !okV || validate.Parent.SpanID() != rpc.SpanContext.SpanID():
				t.Errorf("no validation span under the RPC span; spans: %v", names)
			case !okA || appendSpan.Parent.SpanID() != rpc.SpanContext.SpanID():
				t.Errorf("no append span under the RPC span; spans: %v", names)
			case !okB || batch.Parent.SpanID() != appendSpan.SpanContext.SpanID():
				t.Errorf("no writer batch span under the append span; spans: %v", names)
			case len(batch.Links) == 0 || batch.Links[0].SpanContext.SpanID() != appendSpan.SpanContext.SpanID():
				t.Errorf("the batch span does not link the publish's append span: %v", batch.Links)
			case query.Name == "":
				t.Errorf("no database query span under the batch span; spans: %v", names)
			}
		})
	}
}
