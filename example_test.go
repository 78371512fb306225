package herald_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/heraldrt/herald"
)

// Publish a JSON event. Without an IdempotencyKey the client makes one,
// and retries with it while the server is unavailable: the event is
// stored once.
func ExampleClient_Publish() {
	ctx := context.Background()
	c, err := herald.NewClient(serverURL()) // e.g. "http://127.0.0.1:8080"
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ack, err := c.Publish(ctx, herald.Message{
		Channel: "orders:1", Type: "order.created", Data: []byte(`{"total":12}`), Format: herald.FormatJSON,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ack.Event.Channel, ack.Event.Type, string(ack.Event.Data), ack.Event.Position > 0)
	// Output: orders:1 order.created {"total":12} true
}

// Subscribe from the start of a channel, then resume later from the
// position of the last event handled (persist sub.Cursor() for that).
func ExampleClient_Subscribe() {
	ctx := context.Background()
	c, err := herald.NewClient(serverURL())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for _, step := range []string{"picked", "packed", "shipped"} {
		if _, err := c.Publish(ctx, herald.Message{Channel: "orders:2", Type: "order." + step}); err != nil {
			log.Fatal(err)
		}
	}

	sub, err := c.Subscribe(ctx, []string{"orders:2"}, herald.After(0))
	if err != nil {
		log.Fatal(err)
	}
	for range 2 {
		ev, err := sub.Next(ctx)
		var truncated *herald.TruncatedError
		if errors.As(err, &truncated) {
			continue // events were removed by retention: reload your state, go on
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Type)
	}
	cursor := sub.Cursor() // the position of "order.packed"
	sub.Close()

	// Later, perhaps in another process: exactly what came after.
	sub, err = c.Subscribe(ctx, []string{"orders:2"}, herald.After(*cursor))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	ev, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ev.Type)
	// Output:
	// order.picked
	// order.packed
	// order.shipped
}

// A session carries several subscriptions and pipelined publishes on one
// stream, and reconnects, resubscribes and resends by itself.
func ExampleClient_Connect() {
	ctx := context.Background()
	c, err := herald.NewClient(serverURL())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	sess := c.Connect(ctx)
	defer sess.Close()

	sub, err := sess.Subscribe(ctx, []string{"chat:lobby"}) // live
	if err != nil {
		log.Fatal(err)
	}
	if _, err := sess.Publish(ctx, herald.Message{Channel: "chat:lobby", Data: []byte("hello"), Format: herald.FormatText}); err != nil {
		log.Fatal(err)
	}
	ev, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ev.Channel, string(ev.Data))
	// Output: chat:lobby hello
}

// Publish from the application's own transaction: subscribers receive the
// event if and only if the transaction commits.
func ExamplePublishTx() {
	ctx := context.Background()
	db := appDatabase() // the application's pgxpool on Herald's database
	if _, err := db.Exec(ctx, `CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, paid boolean NOT NULL DEFAULT false);
		INSERT INTO orders (id) VALUES (7) ON CONFLICT DO NOTHING`); err != nil {
		log.Fatal(err)
	}
	c, err := herald.NewClient(serverURL())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, []string{"orders:7"})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE orders SET paid = true WHERE id = 7"); err != nil {
			return err
		}
		return herald.PublishTx(ctx, tx, herald.Message{
			Channel: "orders:7", Type: "order.paid", Data: []byte(`{"total":12}`), Format: herald.FormatJSON,
			IdempotencyKey: "pay-7",
		})
	})
	if err != nil {
		log.Fatal(err)
	}
	ev, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ev.Type, string(ev.Data))
	// Output: order.paid {"total":12}
}

// The same with database/sql.
func ExamplePublishSQLTx() {
	ctx := context.Background()
	db := stdlib.OpenDBFromPool(appDatabase()) // any database/sql driver for PostgreSQL
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback()
	if err := herald.PublishSQLTx(ctx, tx, herald.Message{Channel: "orders:8", Type: "order.paid", Data: []byte("paid"), Format: herald.FormatText}); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}

	c, err := herald.NewClient(serverURL())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, []string{"orders:8"}, herald.After(0))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	ev, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ev.Type, string(ev.Data))
	// Output: order.paid paid
}
