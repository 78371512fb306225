package services

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/wire"
)

// ListEvents returns a page of a channel's log. With wait (forward, log
// view) a page that would be empty is held until the first entry after
// the cursor arrives: the page is then read by a short-lived stream of the
// subscription core, which is the same forward log read.
func (a *App) ListEvents(ctx context.Context, m *heraldv1.ListEventsRequest) (*heraldv1.ListEventsResponse, error) {
	if err := a.authorize(ctx, actHistory, m.Channel); err != nil {
		return nil, err
	}
	limit := a.cfg.pageSize(m.Limit)
	wait := m.Wait.AsDuration()
	if wait > 0 && (m.Direction == heraldv1.Direction_DIRECTION_BACKWARD || m.View == heraldv1.HistoryView_HISTORY_VIEW_CURRENT) {
		return nil, errPollWait
	}
	if m.FromSeq > 0 && (m.Direction == heraldv1.Direction_DIRECTION_BACKWARD || m.Cursor != 0 || wait > 0) {
		return nil, errFromSeq
	}
	ch, err := a.log.GetChannel(ctx, m.Channel)
	if err != nil {
		return nil, toConnect(a.logger, "list events", err)
	}
	resp := &heraldv1.ListEventsResponse{NextCursor: m.Cursor, TruncatedThrough: ch.TruncatedThrough}
	// The log first, wait or not: what is committed after the cursor is
	// answered at once, including what this client has just published
	// (the stream below sees an entry only once this instance's hub has
	// it, a few ms after its commit).
	page, err := a.log.History(ctx, eventlog.HistoryQuery{
		Channel:     m.Channel,
		Cursor:      m.Cursor,
		Backward:    m.Direction == heraldv1.Direction_DIRECTION_BACKWARD,
		Limit:       limit,
		CurrentOnly: m.View == heraldv1.HistoryView_HISTORY_VIEW_CURRENT,
		FromSeq:     m.FromSeq,
	})
	if err != nil {
		return nil, toConnect(a.logger, "list events", err)
	}
	resp.HasMore = page.HasMore
	resp.Events = make([]*heraldv1.Event, len(page.Events))
	for i := range page.Events {
		resp.Events[i] = wire.EventProto(&page.Events[i])
	}
	if wait > 0 && len(resp.Events) == 0 {
		// Nothing yet: wait on a stream from the cursor, which replays
		// what was committed since the read above, so nothing is missed.
		cursor := m.Cursor
		st, err := a.openAdmitted(ctx, []string{m.Channel}, &cursor, nil)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		got, err := a.poll(ctx, st, wait, limit)
		if err != nil {
			return nil, err
		}
		resp.Events, resp.HasMore = got.Events, got.HasMore
		if got.Subscribed.GetHistoryTruncated() {
			resp.TruncatedThrough = max(resp.TruncatedThrough, got.Subscribed.TruncatedThrough)
		}
	}
	if n := len(resp.Events); n > 0 {
		resp.NextCursor = resp.Events[n-1].Position
	}
	return resp, nil
}

// GetEvent returns one entry.
func (a *App) GetEvent(ctx context.Context, m *heraldv1.GetEventRequest) (*heraldv1.GetEventResponse, error) {
	if err := a.authorize(ctx, actHistory, m.Channel); err != nil {
		return nil, err
	}
	ev, err := a.log.Get(ctx, m.Channel, m.Position)
	if err != nil {
		return nil, toConnect(a.logger, "get event", err)
	}
	return &heraldv1.GetEventResponse{Event: wire.EventProto(&ev)}, nil
}

// UpdateEvent replaces an event's data and appends an UPDATED entry.
func (a *App) UpdateEvent(ctx context.Context, m *heraldv1.UpdateEventRequest) (*heraldv1.UpdateEventResponse, error) {
	pol, err := a.authorizeEdit(ctx, m.Channel, m.Position)
	if err != nil {
		return nil, err
	}
	if err := checkSize(pol, m.Data); err != nil {
		return nil, toConnect(a.logger, "update event", err)
	}
	format := m.Format
	if format == heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED && len(m.Data) > 0 {
		// The data keeps the event's format: check it against that.
		ev, err := a.log.Get(ctx, m.Channel, m.Position)
		if err != nil {
			return nil, toConnect(a.logger, "update event", err)
		}
		format = heraldv1.DataFormat(ev.Format)
		if err := checkData(format, m.Data); err != nil {
			return nil, err
		}
		// Store the format the data was checked against, so that an edit
		// racing this one (and changing the format) cannot leave this
		// data under a format it was never checked for.
	} else if err := checkData(format, m.Data); err != nil {
		return nil, err
	}
	ev, entry, err := a.log.Update(ctx, m.Channel, m.Position, m.Data, eventlog.Format(format), authorOf(ctx))
	if err != nil {
		return nil, toConnect(a.logger, "update event", err)
	}
	return &heraldv1.UpdateEventResponse{Event: wire.EventProto(&ev), Entry: wire.EventProto(&entry)}, nil
}

// DeleteEvent deletes an event and appends a DELETED entry.
func (a *App) DeleteEvent(ctx context.Context, m *heraldv1.DeleteEventRequest) (*heraldv1.DeleteEventResponse, error) {
	if _, err := a.authorizeEdit(ctx, m.Channel, m.Position); err != nil {
		return nil, err
	}
	entry, err := a.log.Delete(ctx, m.Channel, m.Position, authorOf(ctx))
	if err != nil {
		return nil, toConnect(a.logger, "delete event", err)
	}
	return &heraldv1.DeleteEventResponse{Entry: wire.EventProto(&entry)}, nil
}

// errFromSeq refuses a history page addressed by seq in a shape it cannot
// have.
var errFromSeq = connect.NewError(connect.CodeInvalidArgument,
	errors.New("invalid request: from_seq: give it with the FORWARD direction, without a cursor and without wait; page on with next_cursor"))
