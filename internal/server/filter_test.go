package server_test

// Filtered subscriptions and per-channel seq over every transport: the
// filter runs in the one subscription core, so every transport must
// deliver exactly the log's matching events, once and in order, and carry
// the core's checkpoints so that a resume after a long run of dropped
// events starts near the head.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/server"
)

// fitem is what a filtered subscriber received: a subscribed notice, an
// event, a checkpoint (or, for long-poll, a returned cursor), or the end.
type fitem struct {
	sub *heraldv1.Subscribed
	ev  *heraldv1.Event
	cp  int64
	end string
}

type fsubscriber struct {
	items chan fitem
}

type filterOpener func(t *testing.T, base string, ch string, cursor *int64, f *heraldv1.EventFilter) *fsubscriber

var filterTransports = []struct {
	name string
	open filterOpener
}{
	{"connect", rpcFilterOpener(0)},
	{"grpc", rpcFilterOpener(1)},
	{"grpcweb", rpcFilterOpener(2)},
	{"ws", wsFilterOpener(gateway.SubprotocolJSON)},
	{"ws-proto", wsFilterOpener(gateway.SubprotocolProto)},
	{"sse", openFilteredSSE},
	{"longpoll", openFilteredLongPoll},
}

func newFSubscriber(t *testing.T) (*fsubscriber, context.Context) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &fsubscriber{items: make(chan fitem, 1<<16)}, ctx
}

func (s *fsubscriber) next(t *testing.T, within time.Duration) fitem {
	t.Helper()
	select {
	case it := <-s.items:
		if it.end != "" {
			t.Fatalf("stream ended: %s", it.end)
		}
		return it
	case <-time.After(within):
		t.Fatalf("nothing received within %v", within)
	}
	return fitem{}
}

func rpcFilterOpener(protocol int) filterOpener {
	return func(t *testing.T, base, ch string, cursor *int64, f *heraldv1.EventFilter) *fsubscriber {
		t.Helper()
		p := protocols[protocol]
		c := newClients(base, p.http(), p.opts...)
		s, ctx := newFSubscriber(t)
		st, err := c.events.Subscribe(ctx, connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{ch}, Cursor: cursor, Filter: f}))
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		go func() {
			defer st.Close()
			for st.Receive() {
				switch m := st.Msg().Message.(type) {
				case *heraldv1.SubscribeResponse_Subscribed:
					s.items <- fitem{sub: m.Subscribed}
				case *heraldv1.SubscribeResponse_Event:
					s.items <- fitem{ev: m.Event}
				case *heraldv1.SubscribeResponse_Checkpoint:
					s.items <- fitem{cp: m.Checkpoint.Position}
				}
			}
			s.items <- fitem{end: fmt.Sprint("ended: ", st.Err())}
		}()
		return s
	}
}

func wsFilterOpener(subprotocol string) filterOpener {
	return func(t *testing.T, base, ch string, cursor *int64, f *heraldv1.EventFilter) *fsubscriber {
		t.Helper()
		s, ctx := newFSubscriber(t)
		c := dialWS(t, ctx, base, subprotocol)
		if err := wsWrite(ctx, c, subprotocol, &heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{
			Subscribe: &heraldv1.SubscribeRequest{Channels: []string{ch}, Cursor: cursor, Filter: f},
		}}); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer c.CloseNow()
			for {
				m, err := wsRead(ctx, c)
				if err != nil {
					s.items <- fitem{end: err.Error()}
					return
				}
				switch v := m.Message.(type) {
				case *heraldv1.ConnectResponse_Subscribed:
					s.items <- fitem{sub: v.Subscribed}
				case *heraldv1.ConnectResponse_Event:
					s.items <- fitem{ev: v.Event}
				case *heraldv1.ConnectResponse_Checkpoint:
					if m.Id != "s" {
						s.items <- fitem{end: "checkpoint for subscription " + m.Id}
						return
					}
					s.items <- fitem{cp: v.Checkpoint.Position}
				case *heraldv1.ConnectResponse_Error:
					s.items <- fitem{end: v.Error.String()}
					return
				}
			}
		}()
		return s
	}
}

// filterQuery writes a filter as the SSE and long-poll parameters.
func filterQuery(q url.Values, f *heraldv1.EventFilter) {
	q["type"] = f.GetTypes()
	for k, v := range f.GetTags() {
		q.Add("tag", k+":"+v)
	}
}

func openFilteredSSE(t *testing.T, base, ch string, cursor *int64, f *heraldv1.EventFilter) *fsubscriber {
	t.Helper()
	s, ctx := newFSubscriber(t)
	q := sseQuery([]string{ch}, cursor)
	filterQuery(q, f)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/sse?"+q.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("sse: %s %s", resp.Status, b)
	}
	go func() {
		defer resp.Body.Close()
		r := newSSEReader(resp.Body)
		for {
			ev, err := r.next()
			if err != nil {
				s.items <- fitem{end: err.Error()}
				return
			}
			switch ev.event {
			case "@subscribed":
				m := &heraldv1.Subscribed{}
				mustUnmarshal(ev.data, m)
				s.items <- fitem{sub: m}
			case "@checkpoint":
				m := &heraldv1.Checkpoint{}
				mustUnmarshal(ev.data, m)
				// The id moves Last-Event-ID: it must be the position.
				if ev.id != strconv.FormatInt(m.Position, 10) {
					s.items <- fitem{end: fmt.Sprintf("@checkpoint id %q for position %d", ev.id, m.Position)}
					return
				}
				s.items <- fitem{cp: m.Position}
			case "@end":
				s.items <- fitem{end: ev.data}
				return
			default:
				if ev.data == "" {
					continue
				}
				m := &heraldv1.Event{}
				mustUnmarshal(ev.data, m)
				s.items <- fitem{ev: m}
			}
		}
	}()
	return s
}

// openFilteredLongPoll polls GET /v1/events with the filter, passing each
// returned cursor to the next poll, and reports each cursor as a
// checkpoint.
func openFilteredLongPoll(t *testing.T, base, ch string, cursor *int64, f *heraldv1.EventFilter) *fsubscriber {
	t.Helper()
	s, ctx := newFSubscriber(t)
	go func() {
		first := true
		for ctx.Err() == nil {
			q := url.Values{"channel": {ch}, "wait": {"2s"}}
			filterQuery(q, f)
			if cursor != nil {
				q.Set("cursor", strconv.FormatInt(*cursor, 10))
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events?"+q.Encode(), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					s.items <- fitem{end: err.Error()}
				}
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				s.items <- fitem{end: fmt.Sprintf("%s %s %v", resp.Status, body, err)}
				return
			}
			page := &heraldv1.PollResponse{}
			mustUnmarshal(string(body), page)
			if first {
				first = false
				s.items <- fitem{sub: page.Subscribed}
			}
			for _, ev := range page.Events {
				s.items <- fitem{ev: ev}
			}
			s.items <- fitem{cp: page.Cursor}
			cursor = &page.Cursor
		}
	}()
	return s
}

// publishMany publishes ps with 8 concurrent unary calls and returns the
// events in position order.
func publishMany(t *testing.T, c publisher, ps []*heraldv1.PublishRequest) []*heraldv1.Event {
	t.Helper()
	out := make([]*heraldv1.Event, len(ps))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(ps); i += 8 {
				resp, err := c.Publish(context.Background(), connect.NewRequest(ps[i]))
				if err != nil {
					errs <- err
					return
				}
				out[i] = resp.Msg.Event
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.SortFunc(out, func(a, b *heraldv1.Event) int { return int(a.Position - b.Position) })
	return out
}

type publisher interface {
	Publish(context.Context, *connect.Request[heraldv1.PublishRequest]) (*connect.Response[heraldv1.PublishResponse], error)
}

// filterMix is n publishes of which one in ten matches filterUnderTest;
// the others differ by type, by a prefix lookalike, or by a tag value.
func filterMix(ch string, n int, offset int) []*heraldv1.PublishRequest {
	var ps []*heraldv1.PublishRequest
	for i := range n {
		p := &heraldv1.PublishRequest{Channel: ch, Data: []byte(strconv.Itoa(offset + i))}
		switch i % 10 {
		case 0:
			p.Type, p.Tags = "chat.message", map[string]string{"room": "1", "lang": "en"}
		case 1:
			p.Type, p.Tags = "chat.message", map[string]string{"room": "2"}
		case 2:
			p.Type, p.Tags = "chatter", map[string]string{"room": "1"}
		case 3:
			p.Type, p.Tags = "chat.typing", nil
		default:
			p.Type = "noise"
		}
		ps = append(ps, p)
	}
	return ps
}

var filterUnderTest = &heraldv1.EventFilter{Types: []string{"chat.*"}, Tags: map[string]string{"room": "1"}}

func matching(evs []*heraldv1.Event) []int64 {
	var out []int64
	for _, ev := range evs {
		if strings.HasPrefix(ev.Type, "chat.") && ev.Tags["room"] == "1" {
			out = append(out, ev.Position)
		}
	}
	return out
}

// TestFilteredSubscriptions: over every transport and both logs, a filter
// that drops 9 events in 10: replay and live deliver exactly the log's
// matching events, once, in order, with their tags and gap-free seqs; a
// long run of dropped events ends with the subscriber's cursor (its last
// checkpoint, for long-poll its returned cursor) at the head; resuming
// from it starts there and gets the next match first.
func TestFilteredSubscriptions(t *testing.T) {
	t.Parallel()
	for _, b := range []string{"memory", "postgres"} {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			var cfg server.Config
			if b == "postgres" {
				cfg.DatabaseURL, cfg.Postgres.NotifyChannel = database(t)
			}
			in := startInstance(t, cfg)
			c := grpcClients(in)
			for _, tr := range filterTransports {
				t.Run(tr.name, func(t *testing.T) {
					t.Parallel()
					ch := "filter-" + tr.name
					replayed := publishMany(t, c.events, filterMix(ch, 200, 0))
					for i, ev := range replayed {
						if ev.Seq != int64(i+1) {
							t.Fatalf("publish %d: seq %d, want %d", i, ev.Seq, i+1)
						}
					}
					s := tr.open(t, in.base, ch, ptr(int64(0)), filterUnderTest)
					if it := s.next(t, 15*time.Second); it.sub == nil {
						t.Fatalf("first item %+v, want subscribed", it)
					}
					live := publishMany(t, c.events, filterMix(ch, 200, 200))
					want := matching(append(replayed, live...))
					var got []*heraldv1.Event
					for len(got) < len(want) {
						if it := s.next(t, 15*time.Second); it.ev != nil {
							got = append(got, it.ev)
						}
					}
					equalPositions(t, positions(got), want)
					// Each delivered event is the one published, seq and tags included.
					published := map[int64]*heraldv1.Event{}
					for _, ev := range append(replayed, live...) {
						published[ev.Position] = ev
					}
					for _, ev := range got {
						p := published[ev.Position]
						if ev.Seq != p.Seq || ev.Tags["room"] != "1" || ev.Tags["lang"] != "en" || ev.Type != "chat.message" {
							t.Fatalf("delivered %v, published %v", ev, p)
						}
					}

					// A long run of dropped events: the cursor reaches the head.
					var drops []*heraldv1.PublishRequest
					for i := range 250 {
						drops = append(drops, &heraldv1.PublishRequest{Channel: ch, Type: "noise", Data: []byte(strconv.Itoa(i))})
					}
					noise := publishMany(t, c.events, drops)
					head := noise[len(noise)-1].Position
					var cursor, checkpoints int64
					for cursor != head {
						it := s.next(t, 15*time.Second)
						if it.ev != nil {
							t.Fatalf("dropped event delivered: %v", it.ev)
						}
						if it.cp != 0 {
							if it.cp < cursor || it.cp > head {
								t.Fatalf("checkpoint %d after %d, head %d", it.cp, cursor, head)
							}
							cursor = it.cp
							checkpoints++
						}
					}
					if tr.name != "longpoll" && checkpoints < 2 {
						t.Errorf("%d checkpoints over %d dropped events, want at least 2 (one per 100)", checkpoints, len(noise))
					}

					// Resume from there: starts at the head; the next match is first.
					r := tr.open(t, in.base, ch, ptr(cursor), filterUnderTest)
					if it := r.next(t, 15*time.Second); it.sub == nil || it.sub.Cursor != head {
						t.Fatalf("resume: first item %+v, want subscribed at %d", it, head)
					}
					next := publishMany(t, c.events, filterMix(ch, 1, 1000))[0]
					for {
						it := r.next(t, 15*time.Second)
						if it.ev == nil {
							continue
						}
						if it.ev.Position != next.Position || it.ev.Seq != int64(400+len(noise)+1) {
							t.Fatalf("resume: first event %v, want position %d seq %d", it.ev, next.Position, 400+len(noise)+1)
						}
						break
					}
				})
			}
		})
	}
}

// TestFilterRefused: a filter breaking its rules is refused with
// invalid_argument on the RPC, SSE and long-poll alike, and so are tags
// breaking theirs at publish.
func TestFilterRefused(t *testing.T) {
	t.Parallel()
	in := memoryInstance(t)
	c := grpcClients(in)
	bad := []*heraldv1.EventFilter{
		{Types: []string{"chat*"}},
		{Types: []string{"a b"}},
		{Tags: map[string]string{"": "x"}},
		{Tags: map[string]string{"k:k": "x"}},
		{Tags: map[string]string{"k": strings.Repeat("v", 65)}},
	}
	for i, f := range bad {
		st, err := c.events.Subscribe(t.Context(), connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{"x"}, Filter: f}))
		if err == nil {
			st.Receive()
			err = st.Err()
			st.Close()
		}
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("filter %d over gRPC: %v, want invalid_argument", i, err)
		}
	}
	for i, tags := range []map[string]string{{"k:k": "v"}, {"": "v"}, {"k": strings.Repeat("v", 65)},
		{"a": "", "b": "", "c": "", "d": "", "e": "", "f": "", "g": "", "h": "", "i": ""}} {
		_, err := c.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "x", Tags: tags}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("publish with tags %d: %v, want invalid_argument", i, err)
		}
	}
	for _, q := range []string{"type=chat*", "tag=room", "tag=:x", "type=a%20b"} {
		for _, path := range []string{"/v1/sse?channel=x&", "/v1/events?channel=x&"} {
			resp, err := http.Get(in.base + path + q)
			if err != nil {
				t.Fatal(err)
			}
			var e struct{ Code string }
			_ = json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || e.Code != "invalid_argument" {
				t.Errorf("%s%s: %s %q, want 400 invalid_argument", path, q, resp.Status, e.Code)
			}
		}
	}
}

// TestHistoryFromSeq: ListEvents from a seq, over the RPC and REST, on
// both logs; refused in shapes it cannot have.
func TestHistoryFromSeq(t *testing.T) {
	t.Parallel()
	for _, b := range []string{"memory", "postgres"} {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			var cfg server.Config
			if b == "postgres" {
				cfg.DatabaseURL, cfg.Postgres.NotifyChannel = database(t)
			}
			in := startInstance(t, cfg)
			c := grpcClients(in)
			for i := range 30 {
				mustPublish(t, c.events, "seq", strconv.Itoa(i))
				mustPublish(t, c.events, "other", strconv.Itoa(i))
			}
			resp, err := c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: "seq", FromSeq: 21, Limit: 5}))
			if err != nil {
				t.Fatal(err)
			}
			evs := resp.Msg.Events
			if len(evs) != 5 || evs[0].Seq != 21 || evs[4].Seq != 25 || string(evs[0].Data) != "20" || !resp.Msg.HasMore {
				t.Fatalf("from seq 21: %v (has more %v)", evs, resp.Msg.HasMore)
			}
			next, err := c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: "seq", Cursor: resp.Msg.NextCursor}))
			if err != nil {
				t.Fatal(err)
			}
			if n := next.Msg.Events; len(n) != 5 || n[0].Seq != 26 || n[4].Seq != 30 {
				t.Fatalf("next page: %v", n)
			}
			r, err := http.Get(in.base + "/v1/channels/seq/events?from_seq=30")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(r.Body)
			r.Body.Close()
			page := &heraldv1.ListEventsResponse{}
			mustUnmarshal(string(body), page)
			if r.StatusCode != http.StatusOK || len(page.Events) != 1 || page.Events[0].Seq != 30 {
				t.Fatalf("REST from_seq=30: %s %s", r.Status, body)
			}
			for _, q := range []string{"from_seq=3&cursor=5", "from_seq=3&direction=backward", "from_seq=3&wait=1s", "from_seq=-1"} {
				r, err := http.Get(in.base + "/v1/channels/seq/events?" + q)
				if err != nil {
					t.Fatal(err)
				}
				r.Body.Close()
				if r.StatusCode != http.StatusBadRequest {
					t.Errorf("%s: %s, want 400", q, r.Status)
				}
			}
		})
	}
}
