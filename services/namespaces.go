package services

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/namespace"
)

// namespaceSettings are the settings a new channel of pol's namespace gets.
func namespaceSettings(pol *namespace.Policy) eventlog.Settings {
	st := eventlog.DefaultSettings()
	if pol.MaxEventSize != 0 {
		st.MaxEventSize = pol.MaxEventSize
	}
	st.MaxEvents, st.MaxAge = pol.MaxEvents, pol.MaxAge
	return st
}

// TooLargeError refuses data over a namespace's max event size. It is an
// eventlog.ErrTooLarge, so every transport reports it like the channel's
// own limit (invalid_argument, HTTP 413).
type TooLargeError struct {
	Namespace   string
	Size, Limit int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("event data is %d bytes, namespace %q allows at most %d: send smaller events", e.Size, e.Namespace, e.Limit)
}

func (e *TooLargeError) Unwrap() error { return eventlog.ErrTooLarge }

// checkSize applies the namespace's max event size to data.
func checkSize(pol *namespace.Policy, data []byte) error {
	if pol.MaxEventSize > 0 && len(data) > int(pol.MaxEventSize) {
		return &TooLargeError{Namespace: pol.Name, Size: len(data), Limit: int(pol.MaxEventSize)}
	}
	return nil
}

// maxKnownChannels bounds channelCreator's memory; past it the set starts
// over, which costs one CreateChannel round trip per channel again.
const maxKnownChannels = 100_000

// channelCreator creates channels with their namespace's settings before
// their first publish, so that the log's auto-create (which uses the
// server defaults) finds them existing. It remembers the channels it has
// seen exist, so the round trip is paid once per channel per instance.
type channelCreator struct {
	log   eventlog.Log
	mu    sync.Mutex
	known map[string]struct{}
}

// ensure creates channel with pol's settings unless it exists.
func (c *channelCreator) ensure(ctx context.Context, channel string, pol *namespace.Policy) error {
	c.mu.Lock()
	_, ok := c.known[channel]
	c.mu.Unlock()
	if ok {
		return nil
	}
	_, err := c.log.CreateChannel(ctx, channel, namespaceSettings(pol))
	if err != nil && !errors.Is(err, eventlog.ErrChannelExists) {
		return err
	}
	c.mu.Lock()
	if len(c.known) >= maxKnownChannels {
		clear(c.known)
	}
	c.known[channel] = struct{}{}
	c.mu.Unlock()
	return nil
}

// forget drops a deleted channel from what this instance knows to exist,
// so that publishing to it again creates it with its namespace's settings.
// (A deletion through another instance is not seen: see docs/security.md,
// Known limitations.)
func (c *channelCreator) forget(name string) {
	if c != nil {
		c.mu.Lock()
		delete(c.known, name)
		c.mu.Unlock()
	}
}

// prepare applies the namespace rules a publish needs before it reaches
// the log: the max event size, and the channel's creation with the
// namespace's settings. The error is the publish's own (the others of a
// batch go ahead) when it is an eventlog.ErrTooLarge; any other is the
// log's.
func (a *App) prepare(ctx context.Context, r *eventlog.Publish, pol *namespace.Policy) error {
	if err := checkSize(pol, r.Data); err != nil {
		return err
	}
	// Not for an event the new channel could not hold: the log refuses it
	// and nothing is created.
	if a.creator != nil && pol.HasChannelDefaults() && len(r.Data) <= int(namespaceSettings(pol).MaxEventSize) {
		return a.creator.ensure(ctx, r.Channel, pol)
	}
	return nil
}
