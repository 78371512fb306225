package ephemeral

import (
	"context"
	"slices"
	"strings"
	"sync"
)

// Memory is the embedded implementation: one instance, everything in
// process. Send and Join deliver on the caller's goroutine.
type Memory struct {
	deliver func(Message)

	mu   sync.Mutex
	sets map[string]map[string]Member // channel -> client id -> member
}

// NewMemory returns a Memory that hands every message to deliver.
func NewMemory(deliver func(Message)) *Memory {
	return &Memory{deliver: deliver, sets: make(map[string]map[string]Member)}
}

// Run waits for ctx: Memory has nothing to run.
func (m *Memory) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Send delivers a signal to the subscribers of this instance.
func (m *Memory) Send(_ context.Context, msg Message) error {
	if _, err := encode(msg); err != nil {
		return err // the same limit as PostgreSQL's, so both answer alike
	}
	m.deliver(msg)
	return nil
}

// Join adds mem to channel's set and announces it.
func (m *Memory) Join(_ context.Context, channel string, mem Member) error {
	m.mu.Lock()
	set := m.sets[channel]
	if set == nil {
		set = make(map[string]Member)
		m.sets[channel] = set
	}
	set[mem.ClientID] = mem
	// Delivered under the lock: joins and leaves of a channel reach the
	// hub in the order the set changed.
	m.deliver(Message{Kind: Join, Channel: channel, Member: mem})
	m.mu.Unlock()
	return nil
}

// Leave removes a member and announces it, once.
func (m *Memory) Leave(_ context.Context, channel, clientID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	mem, ok := m.sets[channel][clientID]
	if !ok {
		return nil
	}
	delete(m.sets[channel], clientID)
	if len(m.sets[channel]) == 0 {
		delete(m.sets, channel)
	}
	m.deliver(Message{Kind: Leave, Channel: channel, Member: mem})
	return nil
}

// Members returns up to limit members of channel with a client id after
// after, in client id order.
func (m *Memory) Members(_ context.Context, channel, after string, limit int) (Page, error) {
	m.mu.Lock()
	set := m.sets[channel]
	all := make([]Member, 0, len(set))
	for _, mem := range set {
		if mem.ClientID > after {
			all = append(all, mem)
		}
	}
	count := int64(len(set))
	m.mu.Unlock()
	slices.SortFunc(all, func(a, b Member) int { return strings.Compare(a.ClientID, b.ClientID) })
	p := Page{Count: count}
	if len(all) > limit {
		all, p.More = all[:limit], true
	}
	p.Members = all
	return p, nil
}
