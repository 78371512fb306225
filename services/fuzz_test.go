package services

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/eventlog/eventlogtest"
	"github.com/heraldrt/herald/internal/fanout"
)

var (
	channelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@/=-]*$`)
	typeRE    = regexp.MustCompile(`^[A-Za-z0-9_.:/-]*$`)
	keyRE     = regexp.MustCompile(`^[\x21-\x7E]*$`)
)

// fuzzLog is one of the logs every fuzz target runs against: what is fine
// on the embedded log must be fine on PostgreSQL, and an internal error from
// either (the database refusing what validation let through) is a finding.
type fuzzLog struct {
	name string
	log  eventlog.Log
	hub  *fanout.Hub
}

// fuzzApps returns an application over each log.
func fuzzApps(f *testing.F, logs []fuzzLog) []*App {
	apps := make([]*App, len(logs))
	for i, l := range logs {
		app, err := New(l.log, l.hub, Config{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			f.Fatal(err)
		}
		apps[i] = app
	}
	return apps
}

// fuzzLogs opens a memory log and a PostgreSQL log, each with a running
// hub, until f ends.
func fuzzLogs(f *testing.F) []fuzzLog {
	f.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	f.Cleanup(func() { cancel(); wg.Wait() })
	var logs []fuzzLog
	for _, l := range eventlogtest.Each(f, eventlog.Options{AutoCreate: true}) {
		hub := fanout.NewHub(l.Log, fanout.Options{Logger: slog.New(slog.DiscardHandler)})
		wg.Go(func() { _ = hub.Run(ctx) })
		<-hub.Ready()
		logs = append(logs, fuzzLog{name: l.Name, log: l.Log, hub: hub})
	}
	return logs
}

// sameAnswer fails unless two logs answered a request alike: the same
// code, the same message for an error, neither internal.
func sameAnswer(t *testing.T, what string, errs map[string]error) {
	t.Helper()
	var first error
	for name, err := range errs {
		switch connect.CodeOf(err) {
		case connect.CodeInternal, connect.CodeUnknown, connect.CodeUnavailable:
			if err != nil {
				t.Fatalf("%s on %s: %v", what, name, err)
			}
		}
		first = err
	}
	for name, err := range errs {
		if (err == nil) != (first == nil) || err != nil && err.Error() != first.Error() {
			t.Fatalf("%s: the logs answer differently: %v (%s) / %v", what, err, name, errs)
		}
	}
}

// FuzzPublishRequest checks the documented publish rules against the
// protovalidate rules and both logs: a request is accepted exactly when the
// documented rules hold, an accepted one is stored as sent (or refused alike
// by both logs: too large, or its idempotency key reused for other content),
// and a refused one writes nothing and gets invalid_argument.
func FuzzPublishRequest(f *testing.F) {
	f.Add("chat:room-42", "message.created", []byte(`{"text":"hi"}`), "key-1")
	f.Add("chat:room-42", "message.created", []byte(`{"text":"ho"}`), "key-1")
	f.Add("", "", []byte{}, "")
	f.Add("-dash", "has space", []byte{0xff}, "tab\tkey")
	f.Add("é", "type", []byte("x"), "ключ")
	f.Add("nul", "t", []byte{0}, "k\x00")
	logs := fuzzLogs(f)
	svcs := fuzzApps(f, logs)
	f.Fuzz(func(t *testing.T, channel, typ string, data []byte, key string) {
		ctx := context.Background()
		req := &heraldv1.PublishRequest{Channel: channel, Type: typ, Data: data, IdempotencyKey: key}
		valid := utf8.ValidString(channel) && utf8.ValidString(typ) && utf8.ValidString(key) &&
			len(channel) >= 1 && len(channel) <= 128 && channelRE.MatchString(channel) &&
			len(typ) <= 64 && typeRE.MatchString(typ) &&
			len(key) <= 128 && keyRE.MatchString(key) &&
			len(data) <= 1<<20
		err := validateMsg(req)
		if (err == nil) != valid {
			t.Fatalf("validation of %q/%q/%q: err=%v, documented rules say valid=%v", channel, typ, key, err, valid)
		}
		if err != nil {
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("refusal code %v", connect.CodeOf(err))
			}
			return
		}
		answers := map[string]error{}
		var events []*heraldv1.PublishResponse
		for i, l := range logs {
			before, err := l.log.Head(ctx)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := svcs[i].Publish(ctx, req)
			answers[l.name] = err
			after, herr := l.log.Head(ctx)
			if herr != nil {
				t.Fatal(herr)
			}
			if err != nil {
				code := connect.CodeOf(err)
				tooLarge := code == connect.CodeInvalidArgument && len(data) > eventlog.DefaultMaxEventSize
				conflict := code == connect.CodeAlreadyExists && key != ""
				if !tooLarge && !conflict {
					t.Fatalf("%s: publish of a valid request: %v", l.name, err)
				}
				if after != before {
					t.Fatalf("%s: a refused publish moved the head from %d to %d", l.name, before, after)
				}
				continue
			}
			ev := resp.Event
			if ev.Channel != channel || !bytes.Equal(ev.Data, data) && !resp.Duplicate || ev.Position <= 0 {
				t.Fatalf("%s: stored %v for %v", l.name, ev, req)
			}
			if !resp.Duplicate && ev.Position <= before {
				t.Fatalf("%s: new event at %d, head was %d", l.name, ev.Position, before)
			}
			events = append(events, resp)
		}
		sameAnswer(t, fmt.Sprintf("publish %v", req), answers)
		if len(events) == 2 && (events[0].Event.Position != events[1].Event.Position || events[0].Duplicate != events[1].Duplicate) {
			t.Fatalf("the logs stored it differently: %v / %v", events[0], events[1])
		}
	})
}

// FuzzListChannels: any page token, prefix and page size is either refused
// with invalid_argument (the same way whichever the log) or answered by
// both logs with the same page.
func FuzzListChannels(f *testing.F) {
	f.Add(int32(0), "", "")
	f.Add(int32(2), "a", "")
	f.Add(int32(5000), "", "b")
	f.Add(int32(-1), "", "")
	f.Add(int32(1), "a\x00", "")
	f.Add(int32(1), "", "\x00")
	f.Add(int32(1), "\xff", "\xfe")
	logs := fuzzLogs(f)
	svcs := fuzzApps(f, logs)
	for _, l := range logs {
		for _, name := range []string{"a", "a/b", "ab", "b", "b:1", "c"} {
			if _, err := l.log.CreateChannel(context.Background(), name, eventlog.DefaultSettings()); err != nil {
				f.Fatal(err)
			}
		}
	}
	f.Fuzz(func(t *testing.T, size int32, token, prefix string) {
		req := &heraldv1.ListChannelsRequest{PageSize: size, PageToken: token, Prefix: prefix}
		// What a client can send: proto3 strings are UTF-8 on the wire.
		if _, err := proto.Marshal(req); err != nil {
			return
		}
		if err := validateMsg(req); err != nil {
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("refusal code %v", connect.CodeOf(err))
			}
			if size >= 0 && !strings.ContainsRune(token+prefix, 0) && len(token) <= 128 && len(prefix) <= 128 &&
				utf8.RuneCountInString(token) <= 128 {
				t.Fatalf("refused %v: %v", req, err)
			}
			return
		}
		answers := map[string]error{}
		var pages []*heraldv1.ListChannelsResponse
		for i, l := range logs {
			resp, err := svcs[i].ListChannels(context.Background(), req)
			answers[l.name] = err
			if err == nil {
				pages = append(pages, resp)
			}
		}
		sameAnswer(t, fmt.Sprintf("list channels %v", req), answers)
		if len(pages) == 2 {
			a, b := pages[0], pages[1]
			if len(a.Channels) != len(b.Channels) || a.NextPageToken != b.NextPageToken {
				t.Fatalf("the logs list differently: %v / %v", a, b)
			}
			for i := range a.Channels {
				if a.Channels[i].Name != b.Channels[i].Name {
					t.Fatalf("the logs list differently: %v / %v", a, b)
				}
			}
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
	logs := fuzzLogs(f)
	svcs := fuzzApps(f, logs)
	f.Fuzz(func(t *testing.T, frame []byte) {
		var req heraldv1.ConnectRequest
		if err := proto.Unmarshal(frame, &req); err != nil {
			return // the transport answers undecodable frames itself
		}
		var first *heraldv1.ConnectResponse
		for i, l := range logs {
			answered := make(chan *heraldv1.ConnectResponse, 64)
			sess := svcs[i].StartSession(context.Background(), func(m *heraldv1.ConnectResponse) error {
				select {
				case answered <- m:
				default:
				}
				return nil
			})
			sess.Handle(&req)
			var m *heraldv1.ConnectResponse
			select {
			case m = <-answered:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: no answer to %v", l.name, &req)
			}
			sess.Close()
			if m.Id != req.Id {
				t.Fatalf("%s: answer for %q carries id %q", l.name, req.Id, m.Id)
			}
			if code := m.GetError().GetCode(); code == "internal" || code == "unknown" || code == "unavailable" {
				t.Fatalf("%s: %v answered with %v", l.name, &req, m)
			}
			if first == nil {
				first = m
			} else if (first.GetError() == nil) != (m.GetError() == nil) || first.GetError().GetMessage() != m.GetError().GetMessage() {
				t.Fatalf("the logs answer %v differently: %v / %v", &req, first, m)
			}
		}
	})
}
