package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	"github.com/heraldrt/herald/gateway"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/limits"
	"github.com/heraldrt/herald/internal/namespace"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/services"
)

// Signals and presence (issue 13): "room" opts in to both; other channels
// use the default policy, which has neither.
const presenceNamespaces = `{"namespaces": {"room": {"signals": true, "presence": "anonymous"}}}`

// presenceHeartbeat is the tests' heartbeat: a killed instance's members
// are removed within four of them.
const presenceHeartbeat = 200 * time.Millisecond

func presenceConfig(t *testing.T, c *server.Config) {
	t.Helper()
	set, err := namespace.Parse([]byte(presenceNamespaces))
	if err != nil {
		t.Fatal(err)
	}
	c.Services.Namespaces = set
	c.HeartbeatInterval = presenceHeartbeat
}

// presenceCluster runs n instances on one schema (n = 1 and pg false: the
// memory log).
func presenceCluster(t *testing.T, pg bool, n int, opts ...func(*server.Config)) []*instance {
	t.Helper()
	var dsn, schema string
	if pg {
		dsn, schema = database(t)
	}
	out := make([]*instance, n)
	for i := range out {
		cfg := server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}}
		presenceConfig(t, &cfg)
		for _, o := range opts {
			o(&cfg)
		}
		out[i] = startInstance(t, cfg)
	}
	return out
}

// logs runs a test on the memory log (one instance) and on PostgreSQL (two
// instances: sender on the first, receivers on the last).
func logs(t *testing.T, f func(t *testing.T, nodes []*instance)) {
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		f(t, presenceCluster(t, false, 1))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		f(t, presenceCluster(t, true, 2))
	})
}

// TestSignals: signals sent with the RPC, the WebSocket command and REST
// reach subscribers on another instance over gRPC, Connect, WebSocket and
// SSE, each once, as signals (no position); SSE sends them without an id,
// so Last-Event-ID still names the last event. Nothing is stored.
func TestSignals(t *testing.T) {
	t.Parallel()
	logs(t, func(t *testing.T, nodes []*instance) {
		a, b := nodes[0], nodes[len(nodes)-1]
		const ch = "room:1"

		// Receivers on b.
		grpcSub := subscribe(t, grpcClients(b).events, []string{ch}, nil)
		connSub := subscribe(t, newClients(b.base, http.DefaultClient).events, []string{ch}, nil)
		ws := openWS(t, b.base, gateway.SubprotocolJSON)
		ws.send(t, &heraldv1.ConnectRequest{Id: "s", Command: &heraldv1.ConnectRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channels: []string{ch}}}})
		sse := getSSE(t, http.DefaultClient, b.base+"/v1/sse?channel="+ch, nil)
		for _, s := range []*stream{grpcSub, connSub} {
			if s.next(t).GetSubscribed() == nil {
				t.Fatal("first message is not subscribed")
			}
		}
		if m := ws.next(t); m.GetSubscribed() == nil {
			t.Fatalf("ws: %v", m)
		}
		if ev := sseSkipRetry(t, sse); ev.event != "@subscribed" {
			t.Fatalf("sse: %+v", ev)
		}

		// Senders on a: the RPC, a WebSocket command, REST.
		rpc := grpcClients(a).events
		if _, err := rpc.Signal(t.Context(), connect.NewRequest(&heraldv1.SignalRequest{Channel: ch, Type: "typing", Data: []byte(`{"who":"rpc"}`), Format: heraldv1.DataFormat_DATA_FORMAT_JSON})); err != nil {
			t.Fatal(err)
		}
		wsA := openWS(t, a.base, gateway.SubprotocolJSON) // Herald's JSON mapping: data as a JSON value
		wsA.send(t, &heraldv1.ConnectRequest{Id: "sig", Command: &heraldv1.ConnectRequest_Signal{Signal: &heraldv1.SignalRequest{Channel: ch, Type: "typing", Data: []byte(`{"who":"ws"}`), Format: heraldv1.DataFormat_DATA_FORMAT_JSON}}})
		if m := wsA.next(t); m.GetSignaled() == nil || m.Id != "sig" {
			t.Fatalf("ws signal answered %v", m)
		}
		resp, err := http.Post(a.base+"/v1/channels/"+url.PathEscape(ch)+"/signals", "application/json", strings.NewReader(`{"type":"typing","data":{"who":"rest"}}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("REST signal: %d %s", resp.StatusCode, body)
		}
		// Then a stored event, after the signals.
		ev := mustPublish(t, rpc, ch, "stored")

		want := []string{`{"who":"rpc"}`, `{"who":"ws"}`, `{"who":"rest"}`}
		for name, s := range map[string]*stream{"grpc": grpcSub, "connect": connSub} {
			var got []string
			for len(got) < 3 {
				m := s.next(t)
				if m.GetEvent() != nil {
					t.Fatalf("%s: event before the signals", name)
				}
				if sig := m.GetSignal(); sig != nil {
					if sig.Channel != ch || sig.Type != "typing" || sig.Format != heraldv1.DataFormat_DATA_FORMAT_JSON {
						t.Fatalf("%s: signal %v", name, sig)
					}
					got = append(got, string(sig.Data))
				}
			}
			equalStrings(t, name, got, want)
			if e := s.next(t).GetEvent(); e.GetPosition() != ev.Position {
				t.Fatalf("%s: after the signals got %v, want the event", name, e)
			}
		}
		var got []string
		for len(got) < 3 {
			m := ws.next(t)
			if sig := m.GetSignal(); sig != nil {
				if m.Id != "s" {
					t.Fatalf("ws: signal on subscription %q", m.Id)
				}
				got = append(got, string(sig.Data))
			}
		}
		equalStrings(t, "ws", got, want)
		if m := ws.next(t); m.GetEvent().GetPosition() != ev.Position {
			t.Fatalf("ws: %v", m)
		}
		got = nil
		for len(got) < 3 {
			e := sse.next(t)
			if e.event != "@signal" || e.hasID {
				t.Fatalf("sse: %+v (a signal is @signal, without an id)", e)
			}
			var sig struct {
				Channel, Type string
				Data          json.RawMessage
			}
			if err := json.Unmarshal([]byte(e.data), &sig); err != nil {
				t.Fatal(err)
			}
			got = append(got, string(sig.Data))
		}
		equalStrings(t, "sse", got, want)
		if e := sse.next(t); e.id != fmt.Sprint(ev.Position) {
			t.Fatalf("sse: after the signals %+v, want the event with id %d", e, ev.Position)
		}

		// Not stored: the channel's history holds the one event.
		hist, err := grpcClients(a).history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: ch}))
		if err != nil {
			t.Fatal(err)
		}
		if len(hist.Msg.Events) != 1 {
			t.Fatalf("history has %d entries, want the 1 event", len(hist.Msg.Events))
		}
		// A resumed subscription gets the event, never the signals.
		re := subscribe(t, grpcClients(b).events, []string{ch}, ptr(int64(0)))
		re.next(t)
		if m := re.next(t); m.GetEvent().GetPosition() != ev.Position {
			t.Fatalf("resume: %v", m)
		}
	})
}

func equalStrings(t *testing.T, name string, got, want []string) {
	t.Helper()
	g, w := slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(g, w) {
		t.Fatalf("%s: got %q, want %q", name, got, want)
	}
}

// TestSignalRefused: outside an opted-in namespace, too large, or over the
// rate limit, a signal is refused with a stable code on every API.
func TestSignalRefused(t *testing.T) {
	t.Parallel()
	in := presenceCluster(t, false, 1, func(c *server.Config) {
		c.Services.SignalRate = limits.Rate{PerSecond: 0.001, Burst: 3}
	})[0]
	c := grpcClients(in).events
	_, err := c.Signal(t.Context(), connect.NewRequest(&heraldv1.SignalRequest{Channel: "other", Data: []byte("x")}))
	if codeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "signals") {
		t.Fatalf("signal outside an opted-in namespace: %v", err)
	}
	_, err = c.Signal(t.Context(), connect.NewRequest(&heraldv1.SignalRequest{Channel: "room:1", Data: bytes.Repeat([]byte("x"), 4097)}))
	if codeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("4097-byte signal: %v", err)
	}
	for i := range 3 {
		if _, err := c.Signal(t.Context(), connect.NewRequest(&heraldv1.SignalRequest{Channel: "room:1", Data: []byte("x")})); err != nil {
			t.Fatalf("signal %d within the burst: %v", i, err)
		}
	}
	_, err = c.Signal(t.Context(), connect.NewRequest(&heraldv1.SignalRequest{Channel: "room:1", Data: []byte("x")}))
	if codeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("signal over the rate: %v", err)
	}
	// The WebSocket command and REST say the same.
	ws := openWS(t, in.base, gateway.SubprotocolJSON)
	ws.send(t, &heraldv1.ConnectRequest{Id: "x", Command: &heraldv1.ConnectRequest_Signal{Signal: &heraldv1.SignalRequest{Channel: "other"}}})
	if m := ws.next(t); m.GetError().GetCode() != "failed_precondition" {
		t.Fatalf("ws: %v", m)
	}
	resp, err := http.Post(in.base+"/v1/channels/room:1/signals", "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("REST over the rate: %d", resp.StatusCode)
	}
	// Presence is off outside "room".
	_, err = heraldv1connect.NewPresenceServiceClient(http.DefaultClient, in.base).GetPresence(t.Context(), connect.NewRequest(&heraldv1.GetPresenceRequest{Channel: "other"}))
	if codeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("presence outside an opted-in namespace: %v", err)
	}
}

// presenceView applies the joins and leaves a subscription receives.
type presenceView struct {
	mu      sync.Mutex
	members map[string]string // client id -> user
	joins   map[string]int
	leaves  map[string]int
}

func newPresenceView() *presenceView {
	return &presenceView{members: map[string]string{}, joins: map[string]int{}, leaves: map[string]int{}}
}

func (v *presenceView) apply(p *heraldv1.PresenceChange) {
	v.mu.Lock()
	defer v.mu.Unlock()
	id := p.GetMember().GetClientId()
	switch p.Action {
	case heraldv1.PresenceAction_PRESENCE_ACTION_JOIN:
		v.members[id] = p.GetMember().GetUser()
		v.joins[id]++
	case heraldv1.PresenceAction_PRESENCE_ACTION_LEAVE:
		delete(v.members, id)
		v.leaves[id]++
	}
}

func (v *presenceView) ids() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Sorted(func(yield func(string) bool) {
		for id := range v.members {
			if !yield(id) {
				return
			}
		}
	})
}

// watch subscribes with presence over gRPC and applies what arrives.
func watch(t *testing.T, in *instance, ch string) (*presenceView, string) {
	t.Helper()
	v := newPresenceView()
	st, err := grpcClients(in).events.Subscribe(t.Context(), connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{ch}, Presence: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if !st.Receive() || st.Msg().GetSubscribed() == nil {
		t.Fatalf("watch: %v", st.Err())
	}
	self := st.Msg().GetSubscribed().GetClientId()
	go func() {
		for st.Receive() {
			if p := st.Msg().GetPresence(); p != nil {
				v.apply(p)
			}
		}
	}()
	return v, self
}

func getPresence(t *testing.T, in *instance, ch string, limit int32) []string {
	t.Helper()
	c := heraldv1connect.NewPresenceServiceClient(h2cClient(), in.base, connect.WithGRPC())
	var ids []string
	token := ""
	for {
		resp, err := c.GetPresence(t.Context(), connect.NewRequest(&heraldv1.GetPresenceRequest{Channel: ch, Limit: limit, PageToken: token}))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range resp.Msg.Members {
			ids = append(ids, m.ClientId)
		}
		if token = resp.Msg.NextPageToken; token == "" {
			if int(resp.Msg.Count) != len(ids) {
				t.Fatalf("count %d, %d members paged", resp.Msg.Count, len(ids))
			}
			return ids
		}
	}
}

func restPresence(t *testing.T, in *instance, ch string) []string {
	t.Helper()
	resp, err := http.Get(in.base + "/v1/channels/" + url.PathEscape(ch) + "/presence?limit=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Members []struct{ ClientID string }
		Count   string
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("REST presence: %d %v", resp.StatusCode, err)
	}
	var ids []string
	for _, m := range out.Members {
		ids = append(ids, m.ClientID)
	}
	slices.Sort(ids)
	return ids
}

// TestPresence: watchers on each instance see one set for the deployment
// while clients join and leave over WebSocket, SSE and gRPC on either
// instance; GetPresence (paged) and REST agree; on PostgreSQL an instance
// is then killed and its members leave within the documented bound; every
// join gets exactly one leave.
func TestPresence(t *testing.T) {
	t.Parallel()
	logs(t, func(t *testing.T, nodes []*instance) {
		a, b := nodes[0], nodes[len(nodes)-1]
		const ch = "room:presence"
		va, selfA := watch(t, a, ch)
		vb, selfB := watch(t, b, ch)
		want := slices.Sorted(slices.Values([]string{selfA, selfB}))
		converge := func(what string) {
			t.Helper()
			deadline := time.Now().Add(15 * time.Second)
			for !slices.Equal(va.ids(), want) || !slices.Equal(vb.ids(), want) {
				if time.Now().After(deadline) {
					t.Fatalf("%s: watchers see %v and %v, want %v", what, va.ids(), vb.ids(), want)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if got := getPresence(t, a, ch, 2); !slices.Equal(got, want) {
				t.Fatalf("%s: GetPresence on a %v, want %v", what, got, want)
			}
			if got := restPresence(t, b, ch); !slices.Equal(got, want) {
				t.Fatalf("%s: REST presence on b %v, want %v", what, got, want)
			}
		}
		converge("watchers")
		add := func(id string) { want = slices.Sorted(slices.Values(append(want, id))) }
		drop := func(id string) {
			want = slices.DeleteFunc(want, func(s string) bool { return s == id })
		}

		// WebSocket on b.
		ws := openWS(t, b.base, gateway.SubprotocolJSON)
		ws.send(t, &heraldv1.ConnectRequest{Id: "p", Command: &heraldv1.ConnectRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channels: []string{ch}}}})
		wsID := ws.next(t).GetSubscribed().GetClientId()
		if wsID == "" {
			t.Fatal("ws subscription has no client id")
		}
		add(wsID)
		// SSE on b, receiving presence itself.
		sse := getSSE(t, http.DefaultClient, b.base+"/v1/sse?presence=1&channel="+ch, nil)
		var sub struct{ ClientID string }
		if e := sseSkipRetry(t, sse); e.event != "@subscribed" || json.Unmarshal([]byte(e.data), &sub) != nil || sub.ClientID == "" {
			t.Fatalf("sse subscribed: %+v", e)
		}
		add(sub.ClientID)
		// gRPC on a and on b.
		g1 := subscribe(t, grpcClients(a).events, []string{ch}, nil)
		g1ID := g1.next(t).GetSubscribed().GetClientId()
		add(g1ID)
		g2 := subscribe(t, grpcClients(b).events, []string{ch}, nil)
		g2ID := g2.next(t).GetSubscribed().GetClientId()
		add(g2ID)
		converge("joined")
		// The SSE stream got the snapshot and the joins after it, as
		// @presence events without ids.
		sseView := newPresenceView()
		for !slices.Equal(sseView.ids(), want) {
			e := sse.next(t)
			if e.event != "@presence" || e.hasID {
				t.Fatalf("sse: %+v", e)
			}
			var p heraldv1.PresenceChange
			if err := services.UnmarshalJSON([]byte(e.data), &p); err != nil {
				t.Fatal(err)
			}
			sseView.apply(&p)
		}

		// Leaving: an unsubscribe, a closed stream.
		ws.send(t, &heraldv1.ConnectRequest{Id: "u", Command: &heraldv1.ConnectRequest_Unsubscribe{Unsubscribe: &heraldv1.UnsubscribeCommand{SubscriptionId: "p"}}})
		drop(wsID)
		g1.stop()
		drop(g1ID)
		converge("left")

		if len(nodes) > 1 {
			// b dies: its members (its watcher, SSE, gRPC) leave within
			// four heartbeats, sent by a.
			killed := time.Now()
			b.kill()
			want = []string{selfA}
			waitFor(t, func() bool { return slices.Equal(va.ids(), want) })
			took := time.Since(killed)
			t.Logf("members of the killed instance left after %v (heartbeat %v)", took, presenceHeartbeat)
			if took > 5*presenceHeartbeat+time.Second {
				t.Fatalf("members left %v after the kill, more than the bound", took)
			}
			if got := getPresence(t, a, ch, 0); !slices.Equal(got, want) {
				t.Fatalf("after the kill: GetPresence %v, want %v", got, want)
			}
		} else {
			g2.stop()
			sse.resp.Body.Close()
			want = slices.DeleteFunc(want, func(s string) bool { return s == g2ID || s == sub.ClientID })
			converge("all but the watchers left")
		}
		// Every join has exactly one leave (a join may arrive twice: in
		// the snapshot and as it happened; both add the same member).
		va.mu.Lock()
		defer va.mu.Unlock()
		for id, n := range va.joins {
			if n < 1 || n > 2 {
				t.Errorf("%s joined %d times", id, n)
			}
			wantLeaves := 1
			if slices.Contains(want, id) {
				wantLeaves = 0
			}
			if va.leaves[id] != wantLeaves {
				t.Errorf("%s: %d leaves, want %d", id, va.leaves[id], wantLeaves)
			}
		}
		for id := range va.leaves {
			if va.joins[id] == 0 {
				t.Errorf("%s left without a join", id)
			}
		}
	})
}

// sseSkipRetry returns the first SSE event with data (the stream opens
// with a retry field alone).
func sseSkipRetry(t *testing.T, c *sseConn) sseEvent {
	t.Helper()
	for {
		if e := c.next(t); e.data != "" {
			return e
		}
	}
}

// TestPresenceIdentity: with authentication, a member shows its token's
// subject and info claim; "presence": "authenticated" refuses anonymous
// readers of the set (RPC, REST and a subscription asking for presence),
// while their subscriptions still count as members.
func TestPresenceIdentity(t *testing.T) {
	t.Parallel()
	set, err := namespace.Parse([]byte(`{"namespaces": {"room": {"subscribe": "anonymous", "presence": "authenticated"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	dsn, schema := database(t)
	in, _ := authInstance(t, func(c *server.Config) {
		c.Services.Namespaces = set
		c.DatabaseURL, c.Postgres.NotifyChannel = dsn, schema
	})
	const ch = "room:id"
	ann := token(t, "ann", time.Hour, map[string]any{"subscribe": []string{"room:>"}, "info": map[string]any{"name": "Ann"}})
	annEvents := newClients(in.base, h2cClient(), connect.WithGRPC(), bearer(ann)).events
	st, err := annEvents.Subscribe(t.Context(), connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{ch}, Presence: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !st.Receive() {
		t.Fatal(st.Err())
	}
	self := st.Msg().GetSubscribed().GetClientId()
	if !st.Receive() {
		t.Fatal(st.Err())
	}
	if p := st.Msg().GetPresence(); p.GetMember().GetClientId() != self || p.GetMember().GetUser() != "ann" || p.GetMember().GetInfo() != `{"name":"Ann"}` {
		t.Fatalf("ann's own join: %v", st.Msg())
	}
	// An anonymous subscriber is a member, but may not read the set.
	anon := subscribe(t, newClients(in.base, http.DefaultClient).events, []string{ch}, nil)
	anonID := anon.next(t).GetSubscribed().GetClientId()
	for {
		if !st.Receive() {
			t.Fatal(st.Err())
		}
		m := st.Msg().GetPresence().GetMember()
		if m.GetClientId() == self {
			continue // ann's own join, in the snapshot and as it happened
		}
		if m.GetClientId() != anonID || m.GetUser() != "" || m.GetInfo() != "" {
			t.Fatalf("the anonymous join: %v", st.Msg())
		}
		break
	}
	_, err = heraldv1connect.NewPresenceServiceClient(http.DefaultClient, in.base).GetPresence(t.Context(), connect.NewRequest(&heraldv1.GetPresenceRequest{Channel: ch}))
	if codeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("anonymous GetPresence: %v", err)
	}
	resp, err := http.Get(in.base + "/v1/channels/" + ch + "/presence")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous REST presence: %d", resp.StatusCode)
	}
	refused, err := newClients(in.base, http.DefaultClient).events.Subscribe(t.Context(), connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{ch}, Presence: true}))
	if err == nil {
		// A server stream reports its refusal on the first receive.
		if refused.Receive() {
			t.Fatalf("anonymous subscription with presence got %v", refused.Msg())
		}
		err = refused.Err()
		refused.Close()
	}
	if codeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("anonymous subscription with presence: %v", err)
	}
	got := getPresenceAuth(t, in, ch, ann)
	if !slices.Equal(got, slices.Sorted(slices.Values([]string{self, anonID}))) {
		t.Fatalf("ann reads %v", got)
	}
}

func getPresenceAuth(t *testing.T, in *instance, ch, tok string) []string {
	t.Helper()
	resp, err := heraldv1connect.NewPresenceServiceClient(http.DefaultClient, in.base, bearer(tok)).GetPresence(t.Context(), connect.NewRequest(&heraldv1.GetPresenceRequest{Channel: ch}))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range resp.Msg.Members {
		ids = append(ids, m.ClientId)
	}
	return ids
}

// TestSignalListenerLoss: when the signal listeners lose their connection
// (terminated by PostgreSQL), subscriptions receiving presence end as
// unavailable (changes may have been missed) while other streams go on;
// signals flow again once the listeners are back, and a new presence
// subscription starts from the current set.
func TestSignalListenerLoss(t *testing.T) {
	t.Parallel()
	dsn, schema := database(t)
	var nodes []*instance
	for range 2 {
		cfg := server.Config{DatabaseURL: dsn, Postgres: eventlog.PostgresOptions{NotifyChannel: schema}}
		presenceConfig(t, &cfg)
		nodes = append(nodes, startInstance(t, cfg))
	}
	a, b := nodes[0], nodes[1]
	const ch = "room:loss"
	w := subscribe(t, grpcClients(b).events, []string{ch}, nil)
	w.next(t)
	st, err := grpcClients(b).events.Subscribe(t.Context(), connect.NewRequest(&heraldv1.SubscribeRequest{Channels: []string{ch}, Presence: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !st.Receive() || st.Msg().GetSubscribed() == nil {
		t.Fatal(st.Err())
	}

	admin, err := pgx.Connect(t.Context(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	var n int
	if err := admin.QueryRow(t.Context(), `
		SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'herald-signals' AND query ILIKE '%' || $1 || '%'`, schema+"_sig").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("terminated %d signal listeners, want 2", n)
	}
	for st.Receive() {
		if st.Msg().GetPresence() == nil {
			t.Fatalf("unexpected %v", st.Msg())
		}
	}
	if codeOf(st.Err()) != connect.CodeUnavailable {
		t.Fatalf("presence stream after the listener loss: %v", st.Err())
	}
	// The stream without presence goes on, and gets signals again once
	// the listeners are back.
	deadline := time.Now().Add(15 * time.Second)
	for got := false; !got; {
		if time.Now().After(deadline) {
			t.Fatal("no signal after the listeners came back")
		}
		if _, err := grpcClients(a).events.Signal(t.Context(), connect.NewRequest(&heraldv1.SignalRequest{Channel: ch, Data: []byte("x")})); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-w.msgs:
			got = m.GetSignal() != nil
		case <-time.After(200 * time.Millisecond):
		}
	}
	// A new presence subscription starts from the current set: w and
	// itself (the ended one left).
	v, self := watch(t, b, ch)
	waitFor(t, func() bool { return len(v.ids()) == 2 && slices.Contains(v.ids(), self) })
}
