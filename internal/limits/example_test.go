package limits_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/heraldrt/herald/internal/limits"
)

func ExampleConns_Acquire() {
	conns := limits.NewConns(20000, 2)
	for range 3 {
		release, err := conns.Acquire("alice")
		if err != nil {
			var le *limits.Error
			errors.As(err, &le)
			fmt.Println(errors.Is(err, limits.ErrTooManyConnections), le.Limit, "-", err)
			break
		}
		defer release() // when the connection ends
	}
	// Output: true connections_per_user - too many connections for this user (limit 2); close some before opening another
}

func ExampleCheckPublish() {
	l := limits.Defaults()
	users := l.NewUserBuckets()     // one per instance
	conn := l.NewConnectionBucket() // one per connection
	now := time.Now()
	var err error
	for err == nil {
		err = limits.CheckPublish(now, conn, users, "alice", 1)
	}
	var le *limits.Error
	errors.As(err, &le)
	fmt.Println(le.Limit, le.RetryAfter, le.RetryAfterHeader())
	// Output: publish_rate_per_connection 100ms 1
}
