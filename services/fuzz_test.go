package services

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"regexp"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
)

var (
	channelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@/=-]*$`)
	typeRE    = regexp.MustCompile(`^[A-Za-z0-9_.:/-]*$`)
	keyRE     = regexp.MustCompile(`^[\x21-\x7E]*$`)
)

// FuzzPublishRequest checks the documented publish rules against the
// protovalidate rules and the log: a request is accepted exactly when the
// documented rules hold, an accepted one is stored as sent, and a refused
// one writes nothing and gets invalid_argument.
func FuzzPublishRequest(f *testing.F) {
	f.Add("chat:room-42", "message.created", []byte(`{"text":"hi"}`), "key-1")
	f.Add("", "", []byte{}, "")
	f.Add("-dash", "has space", []byte{0xff}, "tab\tkey")
	f.Add("é", "type", []byte("x"), "ключ")
	log := eventlog.NewMemory(eventlog.Options{AutoCreate: true})
	svc, err := New(log, nil, Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, channel, typ string, data []byte, key string) {
		ctx := context.Background()
		req := &heraldv1.PublishRequest{Channel: channel, Type: typ, Data: data, IdempotencyKey: key}
		valid := utf8.ValidString(channel) && utf8.ValidString(typ) && utf8.ValidString(key) &&
			len(channel) >= 1 && len(channel) <= 128 && channelRE.MatchString(channel) &&
			len(typ) <= 64 && typeRE.MatchString(typ) &&
			len(key) <= 128 && keyRE.MatchString(key) &&
			len(data) <= 1<<20
		before, err := log.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = validateMsg(req)
		if (err == nil) != valid {
			t.Fatalf("validation of %q/%q/%q: err=%v, documented rules say valid=%v", channel, typ, key, err, valid)
		}
		if err != nil {
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("refusal code %v", connect.CodeOf(err))
			}
			return
		}
		resp, err := svc.Publish(ctx, req)
		after, herr := log.Head(ctx)
		if herr != nil {
			t.Fatal(herr)
		}
		if err != nil {
			if connect.CodeOf(err) != connect.CodeInvalidArgument || len(data) <= eventlog.DefaultMaxEventSize {
				t.Fatalf("publish of a valid request: %v", err)
			}
			if after != before {
				t.Fatalf("a refused publish moved the head from %d to %d", before, after)
			}
			return
		}
		ev := resp.Event
		if ev.Channel != channel || !bytes.Equal(ev.Data, data) && !resp.Duplicate || ev.Position <= 0 {
			t.Fatalf("stored %v for %v", ev, req)
		}
		if !resp.Duplicate && ev.Position <= before {
			t.Fatalf("new event at %d, head was %d", ev.Position, before)
		}
	})
}

// FuzzConnectCommand feeds arbitrary bytes, decoded as a ConnectRequest the
// way the WebSocket gateway's binary frames are, to a session: it never
// panics, and every command is answered (an error for a bad one).
func FuzzConnectCommand(f *testing.F) {
	for _, m := range []*heraldv1.ConnectRequest{
		{Id: "1", Command: &heraldv1.ConnectRequest_Ping{Ping: &heraldv1.PingCommand{}}},
		{Id: "2", Command: &heraldv1.ConnectRequest_Publish{Publish: &heraldv1.PublishRequest{Channel: "a", Data: []byte("x")}}},
		{Id: "3", Command: &heraldv1.ConnectRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channels: []string{"a"}, Cursor: proto.Int64(0)}}},
		{Id: "4", Command: &heraldv1.ConnectRequest_Unsubscribe{Unsubscribe: &heraldv1.UnsubscribeCommand{SubscriptionId: "3"}}},
		{Id: "5"},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	log := eventlog.NewMemory(eventlog.Options{AutoCreate: true})
	hub := fanout.NewHub(log, fanout.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = hub.Run(ctx) })
	f.Cleanup(func() { cancel(); wg.Wait() })
	svc, err := New(log, hub, Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var req heraldv1.ConnectRequest
		if err := proto.Unmarshal(frame, &req); err != nil {
			return // the transport answers undecodable frames itself
		}
		answered := make(chan *heraldv1.ConnectResponse, 64)
		sess := svc.StartSession(context.Background(), func(m *heraldv1.ConnectResponse) error {
			select {
			case answered <- m:
			default:
			}
			return nil
		})
		sess.Handle(&req)
		select {
		case m := <-answered:
			if m.Id != req.Id {
				t.Fatalf("answer for %q carries id %q", req.Id, m.Id)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no answer to %v", &req)
		}
		sess.Close()
	})
}
