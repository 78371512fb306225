package server_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/services"
)

// backends run a behaviour on the embedded log and on PostgreSQL.
var backends = []struct {
	name  string
	start func(t *testing.T) *instance
}{
	{"memory", memoryInstance},
	{"postgres", pgInstance},
}

// eachTransport runs fn over every backend and client protocol.
func eachTransport(t *testing.T, fn func(t *testing.T, c clients)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			in := b.start(t)
			for _, p := range protocols {
				t.Run(p.name, func(t *testing.T) {
					fn(t, newClients(in.base, p.http(), p.opts...))
				})
			}
		})
	}
}

func TestEditsReachLiveAndResumingSubscribers(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, c clients) {
		ch := "chat-" + t.Name()
		live := subscribe(t, c.events, []string{ch}, nil)
		live.next(t) // subscribed
		msg := mustPublish(t, c.events, ch, "helo")
		other := mustPublish(t, c.events, ch, "second")
		up, err := c.history.UpdateEvent(t.Context(), connect.NewRequest(&heraldv1.UpdateEventRequest{Channel: ch, Position: msg.Position, Data: []byte("hello")}))
		if err != nil {
			t.Fatal(err)
		}
		if string(up.Msg.Event.Data) != "hello" || up.Msg.Event.UpdateTime == nil || up.Msg.Entry.Kind != heraldv1.EventKind_EVENT_KIND_UPDATED {
			t.Fatalf("update response = %v", up.Msg)
		}
		del, err := c.history.DeleteEvent(t.Context(), connect.NewRequest(&heraldv1.DeleteEventRequest{Channel: ch, Position: other.Position}))
		if err != nil {
			t.Fatal(err)
		}
		got := live.events(t, 4)
		equalPositions(t, positions(got), []int64{msg.Position, other.Position, up.Msg.Entry.Position, del.Msg.Entry.Position})
		if e := got[2]; e.Kind != heraldv1.EventKind_EVENT_KIND_UPDATED || e.TargetPosition != msg.Position || string(e.Data) != "hello" {
			t.Fatalf("update entry = %v", e)
		}
		if e := got[3]; e.Kind != heraldv1.EventKind_EVENT_KIND_DELETED || e.TargetPosition != other.Position {
			t.Fatalf("delete entry = %v", e)
		}

		// A subscriber resuming from before sees the same entries in order,
		// with the stored events as they now stand.
		r := subscribe(t, c.events, []string{ch}, ptr(int64(0)))
		replayed := r.events(t, 4)
		equalPositions(t, positions(replayed), positions(got))
		if string(replayed[0].Data) != "hello" || !replayed[1].Deleted || len(replayed[1].Data) != 0 {
			t.Fatalf("replayed stored events = %v, %v", replayed[0], replayed[1])
		}

		// The current view is the chat as it stands.
		cur, err := c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: ch, View: heraldv1.HistoryView_HISTORY_VIEW_CURRENT}))
		if err != nil {
			t.Fatal(err)
		}
		if len(cur.Msg.Events) != 1 || string(cur.Msg.Events[0].Data) != "hello" {
			t.Fatalf("current view = %v", cur.Msg.Events)
		}
		// Editing a deleted event is refused.
		_, err = c.history.UpdateEvent(t.Context(), connect.NewRequest(&heraldv1.UpdateEventRequest{Channel: ch, Position: other.Position, Data: []byte("x")}))
		if codeOf(err) != connect.CodeFailedPrecondition {
			t.Fatalf("update of a deleted event: %v, want failed_precondition", err)
		}
	})
}

func TestHistoryPagination(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, c clients) {
		ch := "hist-" + t.Name()
		var want []int64
		for range 25 {
			want = append(want, mustPublish(t, c.events, ch, "x").Position)
		}
		for _, dir := range []heraldv1.Direction{heraldv1.Direction_DIRECTION_FORWARD, heraldv1.Direction_DIRECTION_BACKWARD} {
			var got []int64
			cursor := int64(0)
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("pagination does not end")
				}
				resp, err := c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: ch, Cursor: cursor, Direction: dir, Limit: 10}))
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, positions(resp.Msg.Events)...)
				cursor = resp.Msg.NextCursor
				if !resp.Msg.HasMore {
					break
				}
			}
			w := want
			if dir == heraldv1.Direction_DIRECTION_BACKWARD {
				w = make([]int64, len(want))
				for i, p := range want {
					w[len(want)-1-i] = p
				}
			}
			equalPositions(t, got, w)
		}
		ev, err := c.history.GetEvent(t.Context(), connect.NewRequest(&heraldv1.GetEventRequest{Channel: ch, Position: want[3]}))
		if err != nil || ev.Msg.Event.Position != want[3] {
			t.Fatalf("GetEvent = %v, %v", ev, err)
		}
		_, err = c.history.GetEvent(t.Context(), connect.NewRequest(&heraldv1.GetEventRequest{Channel: "nope", Position: want[3]}))
		if codeOf(err) != connect.CodeNotFound {
			t.Fatalf("GetEvent on another channel: %v, want not_found", err)
		}
	})
}

func TestIdempotentPublish(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, c clients) {
		ch := "idem-" + t.Name()
		req := &heraldv1.PublishRequest{Channel: ch, Data: []byte("once"), IdempotencyKey: "order-42"}
		first, err := c.events.Publish(t.Context(), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		again, err := c.events.Publish(t.Context(), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		if !again.Msg.Duplicate || first.Msg.Duplicate || again.Msg.Event.Position != first.Msg.Event.Position {
			t.Fatalf("retry: first %v, again %v", first.Msg, again.Msg)
		}
		list, err := c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: ch}))
		if err != nil || len(list.Msg.Events) != 1 {
			t.Fatalf("history after a retried publish: %v, %v", list, err)
		}
	})
}

func TestChannels(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, c clients) {
		name := "room-" + t.Name()
		created, err := c.channels.CreateChannel(t.Context(), connect.NewRequest(&heraldv1.CreateChannelRequest{
			Name: name, Settings: &heraldv1.ChannelSettings{MaxEventSize: ptr(int32(8))},
		}))
		if err != nil {
			t.Fatal(err)
		}
		if created.Msg.Channel.Settings.GetMaxEventSize() != 8 || created.Msg.Channel.Settings.GetMaxEvents() != 0 {
			t.Fatalf("created = %v", created.Msg.Channel)
		}
		_, err = c.channels.CreateChannel(t.Context(), connect.NewRequest(&heraldv1.CreateChannelRequest{Name: name}))
		if codeOf(err) != connect.CodeAlreadyExists {
			t.Fatalf("create twice: %v", err)
		}
		_, err = c.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: name, Data: []byte("123456789")}))
		if codeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("publish over max_event_size: %v, want invalid_argument", err)
		}
		up, err := c.channels.UpdateChannel(t.Context(), connect.NewRequest(&heraldv1.UpdateChannelRequest{
			Name: name, Settings: &heraldv1.ChannelSettings{MaxEvents: ptr(int64(100)), MaxAge: durationpb.New(3600e9)},
		}))
		if err != nil {
			t.Fatal(err)
		}
		s := up.Msg.Channel.Settings
		if s.GetMaxEvents() != 100 || s.GetMaxAge().AsDuration().Hours() != 1 || s.GetMaxEventSize() != 8 {
			t.Fatalf("updated settings = %v", s)
		}
		list, err := c.channels.ListChannels(t.Context(), connect.NewRequest(&heraldv1.ListChannelsRequest{Prefix: name}))
		if err != nil || len(list.Msg.Channels) != 1 || list.Msg.Channels[0].Name != name {
			t.Fatalf("list = %v, %v", list, err)
		}
		if _, err := c.channels.DeleteChannel(t.Context(), connect.NewRequest(&heraldv1.DeleteChannelRequest{Name: name})); err != nil {
			t.Fatal(err)
		}
		_, err = c.channels.GetChannel(t.Context(), connect.NewRequest(&heraldv1.GetChannelRequest{Name: name}))
		if codeOf(err) != connect.CodeNotFound {
			t.Fatalf("get after delete: %v", err)
		}
	})
}

func TestAutoCreateOff(t *testing.T) {
	t.Parallel()
	for _, b := range []string{"memory", "postgres"} {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			cfg := server.Config{Services: services.Config{NoAutoCreate: true}}
			if b == "postgres" {
				cfg.DatabaseURL, cfg.Postgres.NotifyChannel = database(t)
			}
			in := startInstance(t, cfg)
			c := newClients(in.base, h2cClient(), connect.WithGRPC())
			_, err := c.events.Publish(t.Context(), connect.NewRequest(&heraldv1.PublishRequest{Channel: "unknown", Data: []byte("x")}))
			if codeOf(err) != connect.CodeNotFound {
				t.Fatalf("publish to an unknown channel: %v, want not_found", err)
			}
			if _, err := c.channels.CreateChannel(t.Context(), connect.NewRequest(&heraldv1.CreateChannelRequest{Name: "unknown"})); err != nil {
				t.Fatal(err)
			}
			mustPublish(t, c.events, "unknown", "now it exists")
		})
	}
}

func TestSlowConsumerOverGRPC(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{Hub: fanout.Options{QueueSize: 16}})
	pub := newClients(in.base, h2cClient(), connect.WithGRPC())
	// The subscriber has its own connection and does not read until
	// everything is published: HTTP/2 flow control backs up into the
	// server and its queue of 16 fills.
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	small := &http.Client{Transport: &http.Transport{Protocols: &p, HTTP2: &http.HTTP2Config{
		MaxReceiveBufferPerConnection: 64 << 10, MaxReceiveBufferPerStream: 64 << 10,
	}}}
	subc := newClients(in.base, small, connect.WithGRPC())
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	st, err := subc.events.Subscribe(ctx, connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{"firehose"}, Cursor: ptr(int64(0))}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	data := string(make([]byte, 32<<10))
	var want []int64
	for range 600 {
		want = append(want, mustPublish(t, pub.events, "firehose", data).Position)
	}
	var got []int64
	for st.Receive() {
		if ev := st.Msg().GetEvent(); ev != nil {
			got = append(got, ev.Position)
		}
	}
	err = st.Err()
	if codeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("stream ended with %v after %d events, want resource_exhausted", err, len(got))
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatal(err)
	}
	var end *heraldv1.StreamEnd
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if se, ok := v.(*heraldv1.StreamEnd); ok {
				end = se
			}
		}
	}
	if end == nil || end.Reason != heraldv1.StreamEndReason_STREAM_END_REASON_SLOW_CONSUMER {
		t.Fatalf("StreamEnd detail = %v", end)
	}
	if n := len(got); n == 0 && end.LastPosition != 0 || n > 0 && got[n-1] != end.LastPosition {
		t.Fatalf("last_position %d, but the last event received was %v", end.LastPosition, got[max(0, n-1):])
	}
	endedAfter := len(got)
	r := subscribe(t, pub.events, []string{"firehose"}, ptr(end.LastPosition))
	got = append(got, positions(r.events(t, len(want)-len(got)))...)
	equalPositions(t, got, want)
	t.Logf("ended as slow after %d of %d events; the resumed stream delivered the rest", endedAfter, len(want))
}

func TestGracefulShutdownEndsStreamsResumably(t *testing.T) {
	t.Parallel()
	in := memoryInstance(t)
	c := newClients(in.base, h2cClient(), connect.WithGRPC())
	ev := mustPublish(t, c.events, "news", "x")
	s := subscribe(t, c.events, []string{"news"}, ptr(int64(0)))
	s.events(t, 1)
	in.cancel() // SIGTERM
	err := s.end(t)
	if codeOf(err) != connect.CodeUnavailable {
		t.Fatalf("stream ended with %v, want unavailable", err)
	}
	var ce *connect.Error
	errors.As(err, &ce)
	found := false
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if se, ok := v.(*heraldv1.StreamEnd); ok {
				found = se.Reason == heraldv1.StreamEndReason_STREAM_END_REASON_SHUTDOWN && se.LastPosition == ev.Position
			}
		}
	}
	if !found {
		t.Fatalf("no shutdown StreamEnd at %d in %v", ev.Position, ce.Details())
	}
}

// TestRetentionAndTruncatedHistory: the retention job trims a channel to
// its max_events; a subscriber whose cursor is older gets
// history_truncated with truncated_through, then the retained events.
func TestRetentionAndTruncatedHistory(t *testing.T) {
	t.Parallel()
	for _, b := range []string{"memory", "postgres"} {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			cfg := server.Config{RetentionInterval: 50 * time.Millisecond}
			if b == "postgres" {
				cfg.DatabaseURL, cfg.Postgres.NotifyChannel = database(t)
			}
			in := startInstance(t, cfg)
			c := newClients(in.base, h2cClient(), connect.WithGRPC())
			if _, err := c.channels.CreateChannel(t.Context(), connect.NewRequest(&heraldv1.CreateChannelRequest{
				Name: "feed", Settings: &heraldv1.ChannelSettings{MaxEvents: ptr(int64(3))},
			})); err != nil {
				t.Fatal(err)
			}
			var want []int64
			for range 10 {
				want = append(want, mustPublish(t, c.events, "feed", "x").Position)
			}
			waitFor(t, func() bool {
				ch, err := c.channels.GetChannel(t.Context(), connect.NewRequest(&heraldv1.GetChannelRequest{Name: "feed"}))
				return err == nil && ch.Msg.Channel.TruncatedThrough == want[6]
			})
			s := subscribe(t, c.events, []string{"feed"}, ptr(want[1]))
			first := s.next(t).GetSubscribed()
			if !first.GetHistoryTruncated() || first.GetTruncatedThrough() != want[6] || first.GetCursor() != want[1] {
				t.Fatalf("subscribed = %v, want truncated through %d", first, want[6])
			}
			equalPositions(t, positions(s.events(t, 3)), want[7:])

			// A cursor inside the retained range is not truncated.
			ok := subscribe(t, c.events, []string{"feed"}, ptr(want[7]))
			if sub := ok.next(t).GetSubscribed(); sub.GetHistoryTruncated() {
				t.Fatalf("cursor %d reported truncated: %v", want[7], sub)
			}
			hist, err := c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: "feed"}))
			if err != nil || hist.Msg.TruncatedThrough != want[6] || len(hist.Msg.Events) != 3 {
				t.Fatalf("history after retention = %v, %v", hist, err)
			}
		})
	}
}

// TestPollAndListWait: long-poll over the RPC protocols. Poll returns what
// is there at once, holds when nothing is, and hands back the cursor to
// continue from; ListEvents with wait does the same for one channel.
func TestPollAndListWait(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, c clients) {
		ch := "poll-" + strings.ReplaceAll(t.Name(), "/", "-")
		var want []int64
		for range 3 {
			want = append(want, mustPublish(t, c.events, ch, "x").Position)
		}
		got, err := c.events.Poll(t.Context(), connect.NewRequest(&heraldv1.PollRequest{Channels: []string{ch}, Cursor: ptr(int64(0)), Limit: 2}))
		if err != nil {
			t.Fatal(err)
		}
		equalPositions(t, positions(got.Msg.Events), want[:2])
		if !got.Msg.HasMore || got.Msg.Cursor != want[1] {
			t.Fatalf("page 1: has_more %v cursor %d, want true and %d", got.Msg.HasMore, got.Msg.Cursor, want[1])
		}
		got, err = c.events.Poll(t.Context(), connect.NewRequest(&heraldv1.PollRequest{Channels: []string{ch}, Cursor: &got.Msg.Cursor}))
		if err != nil || got.Msg.HasMore || got.Msg.Cursor != want[2] {
			t.Fatalf("page 2: %v, %v", got, err)
		}
		equalPositions(t, positions(got.Msg.Events), want[2:])

		// Nothing after the cursor: the poll holds until a publish.
		type result struct {
			resp *connect.Response[heraldv1.PollResponse]
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		cursor := got.Msg.Cursor
		go func() {
			start := time.Now()
			r, err := c.events.Poll(context.Background(), connect.NewRequest(&heraldv1.PollRequest{Channels: []string{ch}, Cursor: &cursor, Wait: durationpb.New(20 * time.Second)}))
			done <- result{r, err, time.Since(start)}
		}()
		time.Sleep(200 * time.Millisecond)
		ev := mustPublish(t, c.events, ch, "late")
		r := <-done
		if r.err != nil || len(r.resp.Msg.Events) != 1 || r.resp.Msg.Events[0].Position != ev.Position || r.took > 10*time.Second {
			t.Fatalf("held poll: %v, %v after %v", r.resp, r.err, r.took)
		}
		// An empty wait ends with an empty page at the same cursor.
		empty, err := c.events.Poll(t.Context(), connect.NewRequest(&heraldv1.PollRequest{Channels: []string{ch}, Cursor: &ev.Position, Wait: durationpb.New(300 * time.Millisecond)}))
		if err != nil || len(empty.Msg.Events) != 0 || empty.Msg.Cursor != ev.Position {
			t.Fatalf("empty poll: %v, %v", empty, err)
		}
		// Read your writes: a waiting poll right after the client's own
		// publishes answers every one of them at once (the hub may be a
		// moment behind the log).
		own := []int64{mustPublish(t, c.events, ch, "own-1").Position, mustPublish(t, c.events, ch, "own-2").Position}
		mine, err := c.events.Poll(t.Context(), connect.NewRequest(&heraldv1.PollRequest{Channels: []string{ch}, Cursor: &ev.Position, Wait: durationpb.New(20 * time.Second)}))
		if err != nil {
			t.Fatal(err)
		}
		equalPositions(t, positions(mine.Msg.Events), own)
		ev.Position = own[1]
		// ListEvents with wait: the ordinary page, once there is one.
		published := make(chan error, 1)
		go func() {
			time.Sleep(200 * time.Millisecond)
			_, err := c.events.Publish(context.Background(), connect.NewRequest(&heraldv1.PublishRequest{Channel: ch, Data: []byte("later")}))
			published <- err
		}()
		list, err := c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: ch, Cursor: ev.Position, Wait: durationpb.New(20 * time.Second)}))
		if perr := <-published; perr != nil {
			t.Fatal(perr)
		}
		if err != nil || len(list.Msg.Events) != 1 || string(list.Msg.Events[0].Data) != "later" {
			t.Fatalf("list with wait: %v, %v", list, err)
		}
		_, err = c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: ch, Direction: heraldv1.Direction_DIRECTION_BACKWARD, Wait: durationpb.New(time.Second)}))
		if codeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("backward list with wait: %v, want invalid_argument", err)
		}
		_, err = c.events.Poll(t.Context(), connect.NewRequest(&heraldv1.PollRequest{Channels: []string{ch}, Wait: durationpb.New(2 * time.Minute)}))
		if codeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("wait 2m: %v, want invalid_argument", err)
		}
	})
}
