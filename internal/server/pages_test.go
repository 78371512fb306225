package server_test

import (
	"fmt"
	"math"
	"net/http"
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

// TestLargeLimitsAreLowered: a limit or page size above the server's
// maximum, even above the API's own 1000, is lowered to the maximum on every
// transport, as --max-page-size and the API documentation say; it is not
// refused. Negative ones are still invalid_argument.
func TestLargeLimitsAreLowered(t *testing.T) {
	t.Parallel()
	in := startInstance(t, server.Config{Services: services.Config{PageSize: 3, MaxPageSize: 5}})
	c := newClients(in.base, http.DefaultClient)
	for i := range 7 {
		mustPublish(t, c.events, fmt.Sprintf("big:%d", i), "x")
		mustPublish(t, c.events, "big:0", "y")
	}
	for _, limit := range []int32{1001, math.MaxInt32} {
		for _, p := range protocols {
			c := newClients(in.base, p.http(), p.opts...)
			list, err := c.history.ListEvents(t.Context(), connect.NewRequest(&heraldv1.ListEventsRequest{Channel: "big:0", Limit: limit}))
			if err != nil || len(list.Msg.Events) != 5 || !list.Msg.HasMore {
				t.Fatalf("%s: ListEvents limit %d: %v, %v; want 5 events and has_more", p.name, limit, list, err)
			}
			poll, err := c.events.Poll(t.Context(), connect.NewRequest(&heraldv1.PollRequest{Channels: []string{"big:0"}, Cursor: ptr(int64(0)), Limit: limit}))
			if err != nil || len(poll.Msg.Events) != 5 || !poll.Msg.HasMore {
				t.Fatalf("%s: Poll limit %d: %v, %v; want 5 events and has_more", p.name, limit, poll, err)
			}
			chs, err := c.channels.ListChannels(t.Context(), connect.NewRequest(&heraldv1.ListChannelsRequest{PageSize: limit}))
			if err != nil || len(chs.Msg.Channels) != 5 || chs.Msg.NextPageToken == "" {
				t.Fatalf("%s: ListChannels page size %d: %v, %v; want 5 channels and a next page", p.name, limit, chs, err)
			}
		}
		q := fmt.Sprintf("limit=%d", limit)
		if got := restList(t, in.base, "big:0", q); len(got.Events) != 5 || !got.HasMore {
			t.Fatalf("REST ListEvents ?%s: %d events, has_more %v", q, len(got.Events), got.HasMore)
		}
		var poll heraldv1.PollResponse
		restCall(t, "GET", in.base+"/v1/events?channel=big:0&cursor=0&"+q, "", nil).ok(t, http.StatusOK, &poll)
		if len(poll.Events) != 5 || !poll.HasMore {
			t.Fatalf("REST Poll ?%s: %d events, has_more %v", q, len(poll.Events), poll.HasMore)
		}
		var chs heraldv1.ListChannelsResponse
		restCall(t, "GET", in.base+fmt.Sprintf("/v1/channels?pageSize=%d", limit), "", nil).ok(t, http.StatusOK, &chs)
		if len(chs.Channels) != 5 || chs.NextPageToken == "" {
			t.Fatalf("REST ListChannels pageSize %d: %d channels, next %q", limit, len(chs.Channels), chs.NextPageToken)
		}
	}
	restCall(t, "GET", in.base+"/v1/channels?pageSize=-1", "", nil).fails(t, http.StatusBadRequest, "invalid_argument", "page_size")
	restCall(t, "GET", in.base+"/v1/events?channel=big:0&limit=-1", "", nil).fails(t, http.StatusBadRequest, "invalid_argument", "limit")
}
