// Package telemetry owns Herald's OpenTelemetry tracing: turning it on from
// the standard OTEL_* environment variables (OTLP over HTTP), and the
// helpers the other packages use to start spans without holding a tracer:
// a span's tracer comes from the span already in the context, so with
// tracing off (no span, or a no-op provider) they cost a context lookup.
//
// Tracing is off by default. It is on when OTEL_TRACES_EXPORTER is "otlp",
// or when it is unset and an OTLP endpoint is configured
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
// OTEL_SDK_DISABLED=true turns it off. The exporter reads the rest of the
// OTEL_EXPORTER_OTLP_* variables itself; OTEL_SERVICE_NAME (default
// "herald") and OTEL_RESOURCE_ATTRIBUTES name the service, and
// OTEL_TRACES_SAMPLER/_ARG choose the sampler (default: parent-based,
// always on).
package telemetry

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// Name is the instrumentation scope of Herald's own spans.
const Name = "github.com/heraldrt/herald"

// Enabled reports whether the environment asks for tracing.
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp {
	case "otlp":
		return true
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	}
	return false
}

// Setup returns a tracer provider exporting over OTLP/HTTP as the OTEL_*
// environment says, and its shutdown (which flushes); nil and a no-op
// shutdown when tracing is off. version names the service's version.
func Setup(ctx context.Context, version string) (*sdktrace.TracerProvider, func(context.Context) error, error) {
	if !Enabled(os.Getenv) {
		return nil, func(context.Context) error { return nil }, nil
	}
	if exp := strings.ToLower(os.Getenv("OTEL_TRACES_EXPORTER")); exp != "" && exp != "otlp" {
		return nil, nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: herald exports traces with otlp only (or none)", exp)
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	attrs := []attribute.KeyValue{semconv.ServiceName("herald")}
	if version != "" {
		attrs = append(attrs, semconv.ServiceVersion(version))
	}
	// The environment (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) wins.
	res, err := resource.Merge(resource.NewSchemaless(attrs...), resource.Environment())
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}

// Propagator is what Herald reads and writes trace context with: W3C trace
// context and baggage.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Start starts a span named name as a child of the span in ctx, with that
// span's tracer provider. Without a recording span in ctx it returns ctx
// and a no-op span, at once.
func Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, parent
	}
	return parent.TracerProvider().Tracer(Name).Start(ctx, name, opts...)
}
