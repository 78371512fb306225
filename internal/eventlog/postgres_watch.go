package eventlog

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// ListenerApplicationName is the application_name of Watch's connection,
// which makes it easy to find in pg_stat_activity.
const ListenerApplicationName = "herald-listener"

// Reconnect backoff of Watch: doubles from the first to the last, with
// jitter.
const (
	listenBackoffMin = 50 * time.Millisecond
	listenBackoffMax = 2 * time.Second
)

// Watch listens on the notify channel on a dedicated connection (not one of
// the pool's) and calls wake for every notification and once after every
// successful LISTEN, since notifications sent while disconnected are lost.
// On any error it reconnects with capped exponential backoff. It returns
// ctx.Err() when ctx ends. wake must not block for long: notifications
// queue on the server meanwhile.
func (p *Postgres) Watch(ctx context.Context, wake func()) error {
	cfg := p.pool.Config().ConnConfig.Copy()
	if p.opts.ListenURL != "" {
		var err error
		if cfg, err = pgx.ParseConfig(p.opts.ListenURL); err != nil {
			return fmt.Errorf("listen database URL: %w", err)
		}
	}
	cfg.RuntimeParams["application_name"] = ListenerApplicationName
	listen := "LISTEN " + pgx.Identifier{p.opts.NotifyChannel}.Sanitize()
	backoff := listenBackoffMin
	for {
		err := p.listen(ctx, cfg, listen, wake, func() { backoff = listenBackoffMin })
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Full jitter over the upper half: instances that lost the
		// database together do not come back in step.
		d := backoff/2 + rand.N(backoff/2+1)
		p.opts.Metrics.ListenReconnect()
		p.opts.Logger.Warn("eventlog: listener lost its connection; reconnecting",
			"channel", p.opts.NotifyChannel, "retry_in", d, "err", err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, listenBackoffMax)
	}
}

// listen connects, LISTENs, and forwards notifications to wake until an
// error; it always returns one.
func (p *Postgres) listen(ctx context.Context, cfg *pgx.ConnConfig, listen string, wake, listening func()) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, listen); err != nil {
		return err
	}
	listening()
	wake()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		wake()
		p.pokeOutbox()
	}
}
