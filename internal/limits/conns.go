package limits

import (
	"sync"
	"sync/atomic"
)

// Conns counts the open connections of one instance, in total and per user,
// and refuses those over the limits. It is safe for concurrent use; both
// limits are checked and both counts raised under one lock, so concurrent
// Acquires never admit more than the limits.
//
// A user's entry is deleted when its count returns to zero, so memory is
// proportional to the users currently connected.
type Conns struct {
	maxInstance, maxUser int

	mu    sync.Mutex
	total int
	users map[string]int
}

// NewConns returns a counter admitting at most maxInstance connections in
// all and maxUser per user; 0 or less disables a limit.
func NewConns(maxInstance, maxUser int) *Conns {
	return &Conns{maxInstance: maxInstance, maxUser: maxUser, users: make(map[string]int)}
}

// Acquire counts a new connection for user, or refuses it with an *Error
// matching ErrTooManyConnections (the per-user limit is reported first: it
// is the one the client can fix). On success the caller must call release
// when the connection ends; release is idempotent and safe to call from any
// goroutine. The empty user (anonymous, unkeyed) counts only against the
// instance limit; pass a stable key, such as "ip:" + address, to bound
// anonymous clients too.
func (c *Conns) Acquire(user string) (release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if user != "" && c.maxUser > 0 && c.users[user] >= c.maxUser {
		return nil, &Error{Limit: LimitConnectionsPerUser, Max: c.maxUser, Action: ActionCloseConnections}
	}
	if c.maxInstance > 0 && c.total >= c.maxInstance {
		return nil, &Error{Limit: LimitConnectionsPerInstance, Max: c.maxInstance, Action: ActionRetryLater}
	}
	c.total++
	if user != "" {
		c.users[user]++
	}
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			c.release(user)
		}
	}, nil
}

func (c *Conns) release(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if user != "" {
		if n := c.users[user] - 1; n > 0 {
			c.users[user] = n
		} else {
			delete(c.users, user)
		}
	}
}

// Total returns the number of open connections.
func (c *Conns) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// User returns user's open connections.
func (c *Conns) User(user string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.users[user]
}

// Users returns the number of users with at least one open connection.
func (c *Conns) Users() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.users)
}
