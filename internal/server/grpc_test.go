package server_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// TestGRPCGoClient talks to a real server with google.golang.org/grpc:
// publish, subscribe with replay, live delivery, resume from a cursor,
// errors as gRPC statuses, health and reflection.
func TestGRPCGoClient(t *testing.T) {
	t.Parallel()
	in := pgInstance(t)
	conn, err := grpc.NewClient(strings.TrimPrefix(in.base, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := t.Context()
	events := heraldv1.NewEventServiceClient(conn)

	var want []int64
	for _, d := range []string{"one", "two", "three"} {
		resp, err := events.Publish(ctx, &heraldv1.PublishRequest{Channel: "orders", Type: "order.created", Data: []byte(d)})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, resp.Event.Position)
	}

	sctx, cancel := context.WithCancel(ctx)
	stream, err := events.Subscribe(sctx, &heraldv1.SubscribeRequest{Channels: []string{"orders"}, Cursor: ptr(int64(0))})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetSubscribed() == nil {
		t.Fatalf("first message %v, %v", first, err)
	}
	recvEvents := func(s grpc.ServerStreamingClient[heraldv1.SubscribeResponse], n int) []int64 {
		var got []int64
		for len(got) < n {
			m, err := s.Recv()
			if err != nil {
				t.Fatalf("recv: %v", err)
			}
			if ev := m.GetEvent(); ev != nil {
				if ev.Type != "order.created" {
					t.Fatalf("type = %q", ev.Type)
				}
				got = append(got, ev.Position)
			}
		}
		return got
	}
	equalPositions(t, recvEvents(stream, 3), want)
	resp, err := events.Publish(ctx, &heraldv1.PublishRequest{Channel: "orders", Type: "order.created", Data: []byte("four")})
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, resp.Event.Position)
	equalPositions(t, recvEvents(stream, 1), want[3:])
	cancel()

	// Disconnected; two more events; resume from the cursor.
	for range 2 {
		resp, err := events.Publish(ctx, &heraldv1.PublishRequest{Channel: "orders", Type: "order.created"})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, resp.Event.Position)
	}
	resumed, err := events.Subscribe(ctx, &heraldv1.SubscribeRequest{Channels: []string{"orders"}, Cursor: ptr(want[3])})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := resumed.Recv(); err != nil || m.GetSubscribed().GetCursor() != want[3] {
		t.Fatalf("resumed first message %v, %v", m, err)
	}
	equalPositions(t, recvEvents(resumed, 2), want[4:])

	// Errors arrive as gRPC statuses.
	_, err = events.Publish(ctx, &heraldv1.PublishRequest{Channel: ""})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty channel: %v", err)
	}
	_, err = heraldv1.NewHistoryServiceClient(conn).GetEvent(ctx, &heraldv1.GetEventRequest{Channel: "orders", Position: 1 << 40})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("missing event: %v", err)
	}

	health, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "herald.v1.EventService"})
	if err != nil || health.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", health, err)
	}

	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := refl.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range rr.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "herald.v1.EventService") {
		t.Fatalf("reflection lists %v", names)
	}
	if err := refl.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := refl.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("reflection end: %v", err)
	}
}
