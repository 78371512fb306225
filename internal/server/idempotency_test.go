package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// TestIdempotencyKeyReusedForAnotherEvent: a key reused on a channel with
// another type or data is refused with already_exists (HTTP 409) and a
// message that names the key and the stored event and says what to do;
// an identical retry still returns the stored event as a duplicate; nothing
// is appended either way. Over every RPC protocol and REST, on both logs.
func TestIdempotencyKeyReusedForAnotherEvent(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, c clients) {
		ch := "conflict-" + strings.ReplaceAll(t.Name(), "/", "-")
		req := &heraldv1.PublishRequest{Channel: ch, Type: "order", Data: []byte("42 apples"), IdempotencyKey: "order-42"}
		first, err := c.events.Publish(t.Context(), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		pos := first.Msg.Event.Position
		for _, other := range []*heraldv1.PublishRequest{
			{Channel: ch, Type: "order", Data: []byte("42 pears"), IdempotencyKey: "order-42"},
			{Channel: ch, Type: "refund", Data: []byte("42 apples"), IdempotencyKey: "order-42"},
		} {
			_, err := c.events.Publish(t.Context(), connect.NewRequest(other))
			if codeOf(err) != connect.CodeAlreadyExists {
				t.Fatalf("key reused for %v: %v, want already_exists", other, err)
			}
			for _, w := range []string{`"order-42"`, fmt.Sprintf("position %d", pos), "use a new key for a new event"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not mention %q", err, w)
				}
			}
		}
		again, err := c.events.Publish(t.Context(), connect.NewRequest(req))
		if err != nil || !again.Msg.Duplicate || again.Msg.Event.Position != pos {
			t.Fatalf("identical retry: %v, %v; want a duplicate of %d", again, err, pos)
		}
		list, err := c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: ch}))
		if err != nil || len(list.Msg.Events) != 1 {
			t.Fatalf("history: %v, %v; want the one event", list, err)
		}
	})

	for _, b := range backends {
		t.Run(b.name+"/rest", func(t *testing.T) {
			t.Parallel()
			in := b.start(t)
			events := restEvents(in.base, "rest-conflict")
			var first, again heraldv1.PublishResponse
			restCall(t, "POST", events+"?type=order", "text/plain", []byte("42 apples"), "Idempotency-Key", "order-42").
				ok(t, http.StatusCreated, &first)
			restCall(t, "POST", events+"?type=order", "text/plain", []byte("42 pears"), "Idempotency-Key", "order-42").
				fails(t, http.StatusConflict, "already_exists", `"order-42"`, fmt.Sprintf("position %d", first.Event.Position), "use a new key")
			restCall(t, "POST", events, "application/json", []byte(`{"type":"refund","data":"NDIgYXBwbGVz","idempotencyKey":"order-42"}`)).
				fails(t, http.StatusConflict, "already_exists", "use a new key")
			restCall(t, "POST", events+"?type=order", "text/plain", []byte("42 apples"), "Idempotency-Key", "order-42").
				ok(t, http.StatusOK, &again)
			if !again.Duplicate || again.Event.Position != first.Event.Position {
				t.Fatalf("identical retry = %v, want a duplicate of %d", &again, first.Event.Position)
			}
			if n := len(restList(t, in.base, "rest-conflict", "").Events); n != 1 {
				t.Fatalf("%d events stored, want 1", n)
			}
		})
	}
}

// TestIdempotencyKeyReusedOverSession: the same over the two transports
// that run a session (the Connect stream and the WebSocket), whose
// publishes go through the session's batched publisher: a key reused for
// other data is an already_exists error frame for that command alone (the
// connection stays open), an identical retry is acknowledged as a
// duplicate of the stored event, and nothing else is appended.
func TestIdempotencyKeyReusedOverSession(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		for _, tr := range cmdTransports {
			t.Run(b.name+"/"+tr.name, func(t *testing.T) {
				t.Parallel()
				in := b.start(t)
				c := tr.open(t, in, "")
				ch := "session-conflict-" + tr.name
				pub := func(id, data string) *heraldv1.ConnectResponse {
					t.Helper()
					c.send(t, &heraldv1.ConnectRequest{Id: id, Command: &heraldv1.ConnectRequest_Publish{Publish: &heraldv1.PublishRequest{
						Channel: ch, Type: "order", Data: []byte(data), IdempotencyKey: "order-42"}}})
					m := c.next(t)
					if m.Id != id {
						t.Fatalf("answer to %s: %v", id, m)
					}
					return m
				}
				first := pub("p1", "42 apples").GetPublished()
				if first == nil || first.Duplicate {
					t.Fatalf("first publish: %v", first)
				}
				pos := first.Event.Position
				conflict := pub("p2", "42 pears").GetError()
				if conflict == nil || conflict.Code != "already_exists" || !strings.Contains(conflict.Message, fmt.Sprintf("position %d", pos)) {
					t.Fatalf("key reused for other data: %v, want already_exists naming position %d", conflict, pos)
				}
				again := pub("p3", "42 apples").GetPublished()
				if again == nil || !again.Duplicate || again.Event.Position != pos {
					t.Fatalf("identical retry: %v, want a duplicate of %d", again, pos)
				}
				ping(t, c, "still-open")
				list, err := newClients(in.base, h2cClient()).history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: ch}))
				if err != nil || len(list.Msg.Events) != 1 {
					t.Fatalf("history: %v, %v; want the one event", list, err)
				}
			})
		}
	}
}
