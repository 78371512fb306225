package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldrt/herald"
	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/services"
)

type clientFlags struct {
	server   string
	protocol string
	token    string
}

func (c *clientFlags) register(fs *envFlags) {
	fs.String(&c.server, "server", []string{"HERALD_SERVER"}, "http://127.0.0.1:8080", "Herald server URL")
	fs.String(&c.protocol, "protocol", []string{"HERALD_PROTOCOL"}, "grpc", "grpc, grpcweb or connect")
	fs.String(&c.token, "token", []string{"HERALD_TOKEN"}, "", "API key or JWT, sent as Authorization: Bearer (servers with --auth-config)")
}

// client returns a client of the server the flags name.
func (c *clientFlags) client() (*herald.Client, error) {
	protocols := map[string]herald.Protocol{"grpc": herald.GRPC, "grpcweb": herald.GRPCWeb, "connect": herald.Connect}
	p, ok := protocols[c.protocol]
	if !ok {
		return nil, fmt.Errorf("protocol %q: want grpc, grpcweb or connect", c.protocol)
	}
	opts := []herald.Option{herald.WithProtocol(p)}
	if c.token != "" {
		opts = append(opts, herald.WithToken(c.token))
	}
	return herald.NewClient(c.server, opts...)
}

func publish(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	var (
		cf        clientFlags
		typ, key  string
		format    string
		printJSON bool
	)
	fs := newFlags("publish", "CHANNEL [DATA]", "Publish one event to CHANNEL: DATA, or stdin when DATA is absent (one trailing newline\nis dropped). Prints the event's position. Data that starts with '-' goes after --:\n  herald publish chat -- -1", stdout)
	cf.register(fs)
	fs.String(&typ, "type", []string{"HERALD_EVENT_TYPE"}, "", "event type (empty means \"message\")")
	fs.String(&key, "key", []string{"HERALD_IDEMPOTENCY_KEY"}, "", "idempotency key: a retry with the same key publishes once")
	fs.String(&format, "format", []string{"HERALD_DATA_FORMAT"}, "auto", "how subscribers read DATA: json, text, bytes, or auto (json for a JSON object or array, text for UTF-8, bytes otherwise)")
	fs.BoolVar(&printJSON, "json", false, "print the published event as JSON")
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return fs.usage("want CHANNEL and optionally DATA (read from stdin when absent), got %d arguments", fs.NArg())
	}
	var data []byte
	if fs.NArg() == 2 {
		data = []byte(fs.Arg(1))
	} else {
		var err error
		if data, err = io.ReadAll(stdin); err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
		// `echo '{...}' | herald publish` should not publish echo's newline.
		data = bytes.TrimSuffix(data, []byte("\n"))
	}
	df, err := dataFormat(format, data)
	if err != nil {
		return fs.usage("%v", err)
	}
	client, err := cf.client()
	if err != nil {
		return err
	}
	defer client.Close()
	// Without --key the client makes one, so that its retries (while the
	// server is unavailable) publish once.
	resp, err := client.Publish(ctx, herald.Message{Channel: fs.Arg(0), Type: typ, Data: data, IdempotencyKey: key, Format: df})
	if err != nil {
		return err
	}
	ev := resp.Event
	if printJSON {
		b, err := services.MarshalJSON(resp)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, string(b))
		return err
	}
	dup := ""
	if resp.Duplicate {
		dup = " (duplicate: already published)"
	}
	_, err = fmt.Fprintf(stdout, "published %s at position %d%s\n", ev.Channel, ev.Position, dup)
	return err
}

func tail(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		cf        clientFlags
		from      int
		printJSON bool
	)
	fs := newFlags("tail", "CHANNEL...", "Print the events of the channels as they arrive, one per line (position, channel,\ntype, data), or as JSON lines. Reconnects with backoff after any disconnect and\nresumes after the last event printed: none is missed or printed twice.", stdout)
	cf.register(fs)
	fs.IntVar(&from, "from", -1, "replay events after this position first (0: from the oldest); default: live only")
	fs.BoolVar(&printJSON, "json", false, "print each event as a JSON line")
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fs.usage("name at least one CHANNEL")
	}
	client, err := cf.client()
	if err != nil {
		return err
	}
	defer client.Close()
	opts := []herald.SubscribeOption{herald.OnReconnect(func(err error, wait time.Duration, cursor *int64) {
		fmt.Fprintf(os.Stderr, "herald tail: %v; reconnecting in %v from position %s\n", err, wait.Round(time.Millisecond), cursorString(cursor))
	})}
	if from >= 0 {
		opts = append(opts, herald.After(int64(from)))
	}
	sub, err := client.Subscribe(ctx, fs.Args(), opts...)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer sub.Close()
	for {
		ev, err := sub.Next(ctx)
		var truncated *herald.TruncatedError
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &truncated):
			fmt.Fprintf(os.Stderr, "herald tail: history truncated: events up to position %d were removed\n", truncated.Through)
			continue
		case err != nil:
			return err
		}
		if printJSON {
			b, err := services.MarshalJSON(ev)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, string(b))
		} else {
			fmt.Fprintf(stdout, "%d\t%s\t%s\t%s\n", ev.Position, ev.Channel, eventLabel(ev), printable(ev.Data))
		}
	}
}

func cursorString(c *int64) string {
	if c == nil {
		return "(live)"
	}
	return fmt.Sprint(*c)
}

func eventLabel(ev *heraldv1.Event) string {
	t := ev.Type
	if t == "" {
		t = "message"
	}
	switch ev.Kind {
	case heraldv1.EventKind_EVENT_KIND_UPDATED:
		return fmt.Sprintf("%s (update of %d)", t, ev.TargetPosition)
	case heraldv1.EventKind_EVENT_KIND_DELETED:
		return fmt.Sprintf("%s (delete of %d)", t, ev.TargetPosition)
	}
	return t
}

func printable(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return "base64:" + base64.StdEncoding.EncodeToString(b)
}

// dataFormat is the format --format names for data; auto is JSON for a
// JSON object or array, text for UTF-8, bytes otherwise.
func dataFormat(name string, data []byte) (heraldv1.DataFormat, error) {
	switch strings.ToLower(name) {
	case "json":
		return heraldv1.DataFormat_DATA_FORMAT_JSON, nil
	case "text":
		return heraldv1.DataFormat_DATA_FORMAT_TEXT, nil
	case "bytes":
		return heraldv1.DataFormat_DATA_FORMAT_BYTES, nil
	case "auto", "":
		if t := bytes.TrimSpace(data); len(t) > 0 && (t[0] == '{' || t[0] == '[') && json.Valid(t) {
			return heraldv1.DataFormat_DATA_FORMAT_JSON, nil
		}
		if utf8.Valid(data) {
			return heraldv1.DataFormat_DATA_FORMAT_TEXT, nil
		}
		return heraldv1.DataFormat_DATA_FORMAT_UNSPECIFIED, nil
	}
	return 0, fmt.Errorf("invalid value %q for --format: want json, text, bytes or auto", name)
}
