package herald

import (
	"context"
	"database/sql"
	"fmt"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// TxOption configures PublishTx and PublishSQLTx.
type TxOption func(*txOptions)

type txOptions struct {
	schema string
}

// InSchema names the schema Herald's tables live in, when it is not on the
// transaction's search_path (Herald's own connections use the first schema
// of theirs).
func InSchema(schema string) TxOption { return func(o *txOptions) { o.schema = schema } }

// publishTxSQL returns the call of herald_publish_tx for m's format (the
// type of the data argument selects the overload, which sets the event's
// format) and its arguments.
func publishTxSQL(m Message, opts []TxOption) (string, []any, error) {
	var o txOptions
	for _, opt := range opts {
		opt(&o)
	}
	fn := "herald_publish_tx"
	if o.schema != "" {
		fn = pgx.Identifier{o.schema, fn}.Sanitize()
	}
	var data any
	cast := "bytea"
	switch m.Format {
	case FormatJSON:
		// json, not jsonb: the event carries the bytes as given.
		cast, data = "json", string(m.Data)
	case FormatText:
		if !utf8.Valid(m.Data) {
			return "", nil, fmt.Errorf("herald: publish to %q: data is not valid UTF-8, as FormatText requires", m.Channel)
		}
		cast, data = "text", string(m.Data)
	default:
		data = m.Data
		if m.Data == nil {
			data = []byte{}
		}
	}
	var key any
	if m.IdempotencyKey != "" {
		key = m.IdempotencyKey
	}
	return fmt.Sprintf("SELECT %s($1::text, $2::text, $3::%s, $4::text)", fn, cast),
		[]any{m.Channel, m.Type, data, key}, nil
}

// PublishTx publishes m from tx, the application's own transaction in
// Herald's database: subscribers receive it if and only if tx commits,
// once, with a position, in the order of the calls (see the README's
// "Publish from your transaction"). It takes no lock and waits for nothing
// but one small insert. Invalid messages fail here, in tx, with a
// *pgconn.PgError (SQLSTATE 22023, 22004 or 54000); the error aborts tx as
// any failed statement does, unless made in a savepoint.
//
// m.Format selects the payload type: FormatJSON data must be valid JSON,
// FormatText valid UTF-8. No idempotency key is made up: give one to
// dedupe against other publishes of the same event.
func PublishTx(ctx context.Context, tx pgx.Tx, m Message, opts ...TxOption) error {
	q, args, err := publishTxSQL(m, opts)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, q, args...); err != nil {
		return fmt.Errorf("herald: publish to %q: %w", m.Channel, err)
	}
	return nil
}

// PublishSQLTx is PublishTx for database/sql (with the pgx stdlib driver,
// lib/pq, or any PostgreSQL driver).
func PublishSQLTx(ctx context.Context, tx *sql.Tx, m Message, opts ...TxOption) error {
	q, args, err := publishTxSQL(m, opts)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("herald: publish to %q: %w", m.Channel, err)
	}
	return nil
}
