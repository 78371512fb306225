package server_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
)

// bidi wraps a Connect stream with a reader goroutine.
type bidi struct {
	s    *connect.BidiStreamForClient[heraldv1.ConnectRequest, heraldv1.ConnectResponse]
	msgs chan *heraldv1.ConnectResponse
	err  chan error
}

func openBidi(t *testing.T, c clients) *bidi {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := c.events.Connect(ctx)
	b := &bidi{s: s, msgs: make(chan *heraldv1.ConnectResponse, 1024), err: make(chan error, 1)}
	go func() {
		for {
			m, err := s.Receive()
			if err != nil {
				b.err <- err
				return
			}
			b.msgs <- m
		}
	}()
	return b
}

func (b *bidi) send(t *testing.T, req *heraldv1.ConnectRequest) {
	t.Helper()
	if err := b.s.Send(req); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func (b *bidi) next(t *testing.T) *heraldv1.ConnectResponse {
	t.Helper()
	select {
	case m := <-b.msgs:
		return m
	case err := <-b.err:
		t.Fatalf("connect stream ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

// end waits for the stream to end and returns its code.
func (b *bidi) end(t *testing.T) string {
	t.Helper()
	for {
		select {
		case <-b.msgs:
		case err := <-b.err:
			return connect.CodeOf(err).String()
		case <-time.After(15 * time.Second):
			t.Fatal("connect stream not ended within 15s")
		}
	}
}

func TestConnectStream(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			in := be.start(t)
			// Bidirectional streams need HTTP/2: gRPC and Connect (gRPC-Web is half duplex).
			for _, p := range protocols[:2] {
				t.Run(p.name, func(t *testing.T) {
					c := newClients(in.base, h2cClient(), p.opts...)
					ch := "room-" + p.name
					earlier := mustPublish(t, c.events, ch, "before")
					b := openBidi(t, c)

					b.send(t, &heraldv1.ConnectRequest{Id: "p1", Command: &heraldv1.ConnectRequest_Ping{Ping: &heraldv1.PingCommand{}}})
					if m := b.next(t); m.Id != "p1" || m.GetPong() == nil {
						t.Fatalf("ping answer = %v", m)
					}
					b.send(t, &heraldv1.ConnectRequest{Id: "s1", Command: &heraldv1.ConnectRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channels: []string{ch}, Cursor: ptr(int64(0))}}})
					if m := b.next(t); m.Id != "s1" || m.GetSubscribed() == nil {
						t.Fatalf("subscribe answer = %v", m)
					}
					if m := b.next(t); m.Id != "s1" || m.GetEvent().GetPosition() != earlier.Position {
						t.Fatalf("replayed = %v, want position %d", m, earlier.Position)
					}

					// Pipelined publishes are committed in the order sent and acked.
					for i, id := range []string{"a", "b", "c"} {
						b.send(t, &heraldv1.ConnectRequest{Id: id, Command: &heraldv1.ConnectRequest_Publish{Publish: &heraldv1.PublishRequest{Channel: ch, Data: []byte{byte('0' + i)}}}})
					}
					acks := map[string]int64{}
					var events []*heraldv1.Event
					for len(acks) < 3 || len(events) < 3 {
						m := b.next(t)
						switch {
						case m.GetPublished() != nil:
							acks[m.Id] = m.GetPublished().Event.Position
						case m.GetEvent() != nil && m.Id == "s1":
							events = append(events, m.GetEvent())
						default:
							t.Fatalf("unexpected %v", m)
						}
					}
					if !(acks["a"] < acks["b"] && acks["b"] < acks["c"]) {
						t.Fatalf("acks out of send order: %v", acks)
					}
					equalPositions(t, positions(events), []int64{acks["a"], acks["b"], acks["c"]})

					// A bad command gets an error frame; the stream stays open.
					b.send(t, &heraldv1.ConnectRequest{Id: "bad", Command: &heraldv1.ConnectRequest_Publish{Publish: &heraldv1.PublishRequest{Channel: "no spaces allowed"}}})
					if m := b.next(t); m.Id != "bad" || m.GetError().GetCode() != "invalid_argument" {
						t.Fatalf("bad publish answer = %v", m)
					}
					b.send(t, &heraldv1.ConnectRequest{Id: "s1", Command: &heraldv1.ConnectRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channels: []string{ch}}}})
					if m := b.next(t); m.GetError().GetCode() != "already_exists" {
						t.Fatalf("duplicate subscription id answer = %v", m)
					}

					b.send(t, &heraldv1.ConnectRequest{Id: "u1", Command: &heraldv1.ConnectRequest_Unsubscribe{Unsubscribe: &heraldv1.UnsubscribeCommand{SubscriptionId: "s1"}}})
					if m := b.next(t); m.Id != "u1" || m.GetUnsubscribed() == nil {
						t.Fatalf("unsubscribe answer = %v", m)
					}
					// After Unsubscribed no event of s1 arrives: the next frame is the pong.
					mustPublish(t, c.events, ch, "after")
					b.send(t, &heraldv1.ConnectRequest{Id: "p2", Command: &heraldv1.ConnectRequest_Ping{Ping: &heraldv1.PingCommand{}}})
					if m := b.next(t); m.Id != "p2" || m.GetPong() == nil {
						t.Fatalf("after unsubscribe got %v, want only the pong", m)
					}
					if err := b.s.CloseRequest(); err != nil {
						t.Fatal(err)
					}
					select {
					case err := <-b.err:
						if !errors.Is(err, io.EOF) {
							t.Fatalf("stream end after half-close: %v, want a clean end", err)
						}
					case <-time.After(10 * time.Second):
						t.Fatal("stream did not end after half-close with no subscriptions")
					}
				})
			}
		})
	}
}
