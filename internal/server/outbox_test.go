package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/internal/server"
)

// TestOutboxOverEveryTransport: events an application publishes from its
// own transaction (herald_publish_tx) reach subscribers on every transport
// once, with positions, in call order, when the transaction commits; a
// rolled-back transaction delivers nothing.
func TestOutboxOverEveryTransport(t *testing.T) {
	t.Parallel()
	dsn, schema := database(t)
	cfg := server.Config{DatabaseURL: dsn}
	cfg.Postgres.NotifyChannel = schema
	in := startInstance(t, cfg)
	app := pgtest.OpenPool(t, dsn) // the application's own pool on the same database
	c := grpcClients(in)
	for _, tr := range subscribeTransports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := t.Context()
			ch := "orders-" + strings.ReplaceAll(t.Name(), "/", "-")
			s := tr.open(t, in.base, []string{ch}, nil, nil) // live only
			if it := s.next(t); it.sub == nil {
				t.Fatalf("first = %+v, want subscribed", it)
			}
			errRollback := errors.New("rollback")
			err := pgx.BeginFunc(ctx, app, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "SELECT herald_publish_tx($1, 'order.paid', 'lost'::text)", ch); err != nil {
					return err
				}
				return errRollback
			})
			if !errors.Is(err, errRollback) {
				t.Fatal(err)
			}
			if err := pgx.BeginFunc(ctx, app, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SELECT herald_publish_tx($1, 'order.paid', '{"total":12}'::jsonb, 'pay-42')`, ch); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, "SELECT herald_publish_tx($1, 'order.shipped', 'parcel 7'::text)", ch)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			marker := mustPublish(t, c.events, ch, "marker") // published after the commit: after its events
			evs := s.events(t, 3)
			// jsonb's text is stored; JSON transports may carry it compacted.
			if evs[0].Type != "order.paid" || strings.ReplaceAll(string(evs[0].Data), " ", "") != `{"total":12}` || evs[0].IdempotencyKey != "pay-42" ||
				evs[1].Type != "order.shipped" || string(evs[1].Data) != "parcel 7" || evs[1].Author != "db:postgres" {
				t.Fatalf("received %v", evs)
			}
			equalPositions(t, positions(evs), []int64{evs[0].Position, evs[0].Position + 1, marker.Position})
			if evs[0].Format != heraldv1.DataFormat_DATA_FORMAT_JSON || evs[1].Format != heraldv1.DataFormat_DATA_FORMAT_TEXT {
				t.Fatalf("formats %v, %v; want JSON, TEXT", evs[0].Format, evs[1].Format)
			}
		})
	}
	var left int
	if err := app.QueryRow(context.Background(), "SELECT count(*) FROM herald_outbox").Scan(&left); err != nil || left != 0 {
		t.Fatalf("outbox rows left: %d, %v", left, err)
	}
}
