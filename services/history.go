package services

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/gen/herald/v1/heraldv1connect"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/fanout"
	"github.com/heraldrt/herald/internal/namespace"
)

// DefaultPageSize is the page size when a request leaves it 0, and
// MaxPageSize the largest a request may ask for (the API's own limit);
// PageSizes may lower both.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// PageSizes bounds the pages of history, long-polls and channel lists.
type PageSizes struct {
	// Default is the size of a page when the request leaves it 0.
	Default int
	// Max caps what a request may ask for: a larger limit is lowered to
	// it (the page then says there is more), not refused.
	Max int
}

// DefaultPageSizes are 100 and the API's maximum, 1000.
func DefaultPageSizes() PageSizes { return PageSizes{Default: DefaultPageSize, Max: MaxPageSize} }

// Validate reports sizes outside 1 <= Default <= Max <= MaxPageSize.
func (p PageSizes) Validate() error {
	if p.Default < 1 || p.Max < p.Default || p.Max > MaxPageSize {
		return fmt.Errorf("page sizes: want 1 <= default (%d) <= max (%d) <= %d", p.Default, p.Max, MaxPageSize)
	}
	return nil
}

// size is the page size for a request's limit.
func (p PageSizes) size(requested int32) int {
	n := int(requested)
	if n <= 0 {
		n = p.Default
	}
	return min(n, p.Max)
}

// HistoryService implements heraldv1connect.HistoryServiceHandler.
type HistoryService struct {
	log     eventlog.Log
	hub     *fanout.Hub // for long-poll (ListEvents wait)
	logger  *slog.Logger
	streams *Streams // bounds held long-polls; nil: unlimited
	ns      *namespace.Set
	pages   PageSizes
}

// WithPageSizes sets the default and largest page of ListEvents.
func (s *HistoryService) WithPageSizes(p PageSizes) *HistoryService {
	s.pages = p
	return s
}

// WithStreams counts long-polls (ListEvents with wait) against st.
func (s *HistoryService) WithStreams(st *Streams) *HistoryService {
	s.streams = st
	return s
}

var _ heraldv1connect.HistoryServiceHandler = (*HistoryService)(nil)

// NewHistoryService returns the history service over log; hub serves
// long-polls.
func NewHistoryService(log eventlog.Log, hub *fanout.Hub, logger *slog.Logger) *HistoryService {
	if logger == nil {
		logger = slog.Default()
	}
	return &HistoryService{log: log, hub: hub, logger: logger, pages: DefaultPageSizes()}
}

// ListEvents returns a page of a channel's log.
func (s *HistoryService) ListEvents(ctx context.Context, req *connect.Request[heraldv1.ListEventsRequest]) (*connect.Response[heraldv1.ListEventsResponse], error) {
	if err := authorize(ctx, s.ns, actHistory, req.Msg.Channel); err != nil {
		return nil, err
	}
	m := req.Msg
	limit := s.pages.size(m.Limit)
	wait := m.Wait.AsDuration()
	if wait > 0 && (m.Direction == heraldv1.Direction_DIRECTION_BACKWARD || m.View == heraldv1.HistoryView_HISTORY_VIEW_CURRENT) {
		return nil, connect.NewError(connect.CodeInvalidArgument,
			errors.New("invalid request: wait: long-poll needs the FORWARD direction and the LOG view"))
	}
	ch, err := s.log.GetChannel(ctx, m.Channel)
	if err != nil {
		return nil, toConnect(s.logger, "list events", err)
	}
	q := eventlog.HistoryQuery{
		Channel:     m.Channel,
		Cursor:      m.Cursor,
		Backward:    m.Direction == heraldv1.Direction_DIRECTION_BACKWARD,
		Limit:       limit,
		CurrentOnly: m.View == heraldv1.HistoryView_HISTORY_VIEW_CURRENT,
	}
	page, err := s.log.History(ctx, q)
	if err != nil {
		return nil, toConnect(s.logger, "list events", err)
	}
	if len(page.Events) == 0 && wait > 0 {
		// Long-poll: wait for the first entry after the cursor through the
		// subscription core, then answer with the ordinary page.
		release, err := s.streams.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
		cursor := m.Cursor
		got, err := poll(ctx, s.hub, []string{m.Channel}, &cursor, wait, 1)
		if err != nil {
			return nil, toConnect(s.logger, "list events", err)
		}
		if len(got.Events) > 0 {
			if page, err = s.log.History(ctx, q); err != nil {
				return nil, toConnect(s.logger, "list events", err)
			}
			if ch, err = s.log.GetChannel(ctx, m.Channel); err != nil {
				return nil, toConnect(s.logger, "list events", err)
			}
		}
	}
	resp := &heraldv1.ListEventsResponse{
		Events:           make([]*heraldv1.Event, len(page.Events)),
		NextCursor:       m.Cursor,
		HasMore:          page.HasMore,
		TruncatedThrough: ch.TruncatedThrough,
	}
	for i := range page.Events {
		resp.Events[i] = EventProto(&page.Events[i])
	}
	if n := len(page.Events); n > 0 {
		resp.NextCursor = page.Events[n-1].Position
	}
	return connect.NewResponse(resp), nil
}

// GetEvent returns one entry.
func (s *HistoryService) GetEvent(ctx context.Context, req *connect.Request[heraldv1.GetEventRequest]) (*connect.Response[heraldv1.GetEventResponse], error) {
	if err := authorize(ctx, s.ns, actHistory, req.Msg.Channel); err != nil {
		return nil, err
	}
	ev, err := s.log.Get(ctx, req.Msg.Channel, req.Msg.Position)
	if err != nil {
		return nil, toConnect(s.logger, "get event", err)
	}
	return connect.NewResponse(&heraldv1.GetEventResponse{Event: EventProto(&ev)}), nil
}

// UpdateEvent replaces an event's data and appends an UPDATED entry.
func (s *HistoryService) UpdateEvent(ctx context.Context, req *connect.Request[heraldv1.UpdateEventRequest]) (*connect.Response[heraldv1.UpdateEventResponse], error) {
	pol, err := s.authorizeEdit(ctx, req.Msg.Channel, req.Msg.Position)
	if err != nil {
		return nil, err
	}
	if err := checkSize(pol, req.Msg.Data); err != nil {
		return nil, toConnect(s.logger, "update event", err)
	}
	ev, entry, err := s.log.Update(ctx, req.Msg.Channel, req.Msg.Position, req.Msg.Data, authorOf(ctx))
	if err != nil {
		return nil, toConnect(s.logger, "update event", err)
	}
	return connect.NewResponse(&heraldv1.UpdateEventResponse{Event: EventProto(&ev), Entry: EventProto(&entry)}), nil
}

// DeleteEvent deletes an event and appends a DELETED entry.
func (s *HistoryService) DeleteEvent(ctx context.Context, req *connect.Request[heraldv1.DeleteEventRequest]) (*connect.Response[heraldv1.DeleteEventResponse], error) {
	if _, err := s.authorizeEdit(ctx, req.Msg.Channel, req.Msg.Position); err != nil {
		return nil, err
	}
	entry, err := s.log.Delete(ctx, req.Msg.Channel, req.Msg.Position, authorOf(ctx))
	if err != nil {
		return nil, toConnect(s.logger, "delete event", err)
	}
	return connect.NewResponse(&heraldv1.DeleteEventResponse{Entry: EventProto(&entry)}), nil
}
