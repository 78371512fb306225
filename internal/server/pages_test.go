package server_test

import (
	"strings"
	"testing"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/server"
	"github.com/heraldrt/herald/services"
)

// TestPageSizes: the server's page sizes apply to history, long-polls and
// channel lists; a larger limit is lowered (with a way to the next page),
// not refused; bad settings stop the server.
func TestPageSizes(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{Services: services.Config{PageSize: 3, MaxPageSize: 5}})
	c := newClients(in.base, h2cClient(), connect.WithGRPC())
	for i := range 8 {
		mustPublish(t, c.events, "pg:"+string(rune('a'+i)), "x")
		mustPublish(t, c.events, "pg:a", "y")
	}
	list := func(limit int32) *heraldv1.ListEventsResponse {
		r, err := c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: "pg:a", Limit: limit}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg
	}
	if got := list(0); len(got.Events) != 3 || !got.HasMore {
		t.Fatalf("default page: %d events, has_more %v", len(got.Events), got.HasMore)
	}
	if got := list(50); len(got.Events) != 5 || !got.HasMore {
		t.Fatalf("page of 50 under a max of 5: %d events, has_more %v", len(got.Events), got.HasMore)
	}
	p, err := c.events.Poll(t.Context(), connect.NewRequest(&heraldv1.PollRequest{Channels: []string{"pg:a"}, Cursor: ptr(int64(0)), Limit: 50}))
	if err != nil || len(p.Msg.Events) != 5 || !p.Msg.HasMore {
		t.Fatalf("poll: %v %v", p, err)
	}
	ch, err := c.channels.ListChannels(t.Context(), connect.NewRequest(&heraldv1.ListChannelsRequest{PageSize: 50}))
	if err != nil || len(ch.Msg.Channels) != 5 || ch.Msg.NextPageToken == "" {
		t.Fatalf("list channels: %v %v", ch, err)
	}
	// Out of range.
	for _, cfg := range []server.Config{{Services: services.Config{PageSize: 10, MaxPageSize: 5}}, {Services: services.Config{MaxPageSize: 5000}}, {Services: services.Config{PageSize: -1}}} {
		_, err := server.New(t.Context(), cfg)
		if err == nil || !strings.Contains(err.Error(), "page sizes") {
			t.Fatalf("server.New(%+v): %v", cfg, err)
		}
	}
}
