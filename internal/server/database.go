package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldrt/herald/migrations"
)

// Backoff between attempts to reach the database at start.
const (
	firstRetry = 250 * time.Millisecond
	maxRetry   = 5 * time.Second
	// pingTimeout bounds one attempt (a host that drops packets).
	pingTimeout = 10 * time.Second
)

const urlFormat = "postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=disable"

// Connect opens a pgx pool on url and checks that the database answers.
//
// While PostgreSQL cannot be reached (connection refused, host not found,
// server starting up or out of connections) it retries with backoff for up
// to wait, logging each failed attempt with its error and the next retry;
// wait 0 tries once. Errors that retrying cannot fix return at once: a
// malformed URL, a login the server refuses, a database that does not
// exist, a TLS mismatch. Every error says what to check, and none shows the
// password.
func Connect(ctx context.Context, url string, wait time.Duration, logger *slog.Logger) (*pgxpool.Pool, error) {
	return connectPool(ctx, url, wait, logger, nil)
}

// connectPool is Connect with a hook that adjusts the pool's configuration
// (tracing) before the pool opens.
func connectPool(ctx context.Context, url string, wait time.Duration, logger *slog.Logger, configure func(*pgxpool.Config)) (*pgxpool.Pool, error) {
	if logger == nil {
		logger = slog.Default()
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, badURL(err)
	}
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, badURL(err)
	}
	start := time.Now()
	deadline := start.Add(wait)
	backoff := firstRetry
	for attempt := 1; ; attempt++ {
		timeout := pingTimeout
		if wait > 0 {
			timeout = min(pingTimeout, max(time.Until(deadline), time.Second))
		}
		pingCtx, cancel := context.WithTimeout(ctx, timeout)
		err := pool.Ping(pingCtx)
		cancel()
		if err == nil {
			if attempt > 1 {
				logger.Info("connected to PostgreSQL", "database", redactURL(url), "attempts", attempt,
					"after", time.Since(start).Round(time.Millisecond))
			}
			return pool, nil
		}
		if ctx.Err() != nil {
			pool.Close()
			return nil, fmt.Errorf("connect to PostgreSQL at %s: %w", redactURL(url), context.Cause(ctx))
		}
		left := time.Until(deadline)
		if permanent(err) || left <= 0 {
			pool.Close()
			return nil, connectError(&cfg.ConnConfig.Config, url, err, attempt, time.Since(start), wait)
		}
		next := min(backoff, left)
		logger.Warn("PostgreSQL is not reachable; retrying", "database", redactURL(url), "attempt", attempt,
			"err", err, "retry_in", next.Round(time.Millisecond), "gives_up_in", left.Round(100*time.Millisecond))
		select {
		case <-ctx.Done():
			pool.Close()
			return nil, fmt.Errorf("connect to PostgreSQL at %s: %w", redactURL(url), context.Cause(ctx))
		case <-time.After(next):
		}
		backoff = min(backoff*2, maxRetry)
	}
}

// badURL explains a connection string pgx cannot parse. pgx's message
// shows the string with its password masked.
func badURL(err error) error {
	return fmt.Errorf("the database URL is not valid: %w\n"+
		"  the format is %s\n"+
		"  (or key=value pairs: host=HOST port=PORT dbname=DATABASE user=USER password=PASSWORD)", err, urlFormat)
}

// permanent reports whether retrying the connection cannot help: the
// server answered and refused (wrong user or password, no such database,
// no permission), or TLS cannot be agreed. Network errors, and a server
// that is starting, stopping or full, may pass.
func permanent(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch class := pgErr.Code[:min(2, len(pgErr.Code))]; class {
		case "08", // connection exception
			"53", // insufficient resources: too many connections
			"57": // operator intervention: starting up, shutting down
			return false
		}
		return true
	}
	return tlsError(err)
}

func tlsError(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		strings.Contains(err.Error(), "server refused TLS connection")
}

// connectError says why the connection failed and what to check.
func connectError(cfg *pgconn.Config, url string, err error, attempts int, waited, wait time.Duration) error {
	where := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	if strings.HasPrefix(cfg.Host, "/") {
		where = cfg.Host + " (Unix socket, port " + strconv.Itoa(int(cfg.Port)) + ")"
	}
	head := fmt.Sprintf("connect to PostgreSQL at %s", redactURL(url))
	var pgErr *pgconn.PgError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "3D000": // invalid_catalog_name
		return fmt.Errorf("%s: database %q does not exist: %w\n"+
			"  create it: createdb -h %s -p %d -U %s %s\n"+
			"  or fix the database name in the URL (%s)",
			head, cfg.Database, err, cfg.Host, cfg.Port, cfg.User, cfg.Database, urlFormat)
	case errors.As(err, &pgErr) && (pgErr.Code == "28P01" || pgErr.Code == "28000"): // invalid_password, invalid_authorization_specification
		return fmt.Errorf("%s: the server refused user %q: %w\n"+
			"  check the user and password in the URL (%s)\n"+
			"  and that the server's pg_hba.conf admits this user from this host",
			head, cfg.User, err, urlFormat)
	case errors.As(err, &pgErr):
		return fmt.Errorf("%s: the server refused the connection: %w", head, err)
	case tlsError(err):
		return fmt.Errorf("%s: TLS failed: %w\n"+
			"  check sslmode in the URL: sslmode=disable for a server without TLS; "+
			"sslmode=verify-full needs sslrootcert and a certificate for the host name", head, err)
	}
	gaveUp := ""
	if attempts > 1 {
		gaveUp = fmt.Sprintf(" (gave up after %v, %d attempts)", waited.Round(100*time.Millisecond), attempts)
	}
	check := fmt.Sprintf("  check: is PostgreSQL running and accepting TCP connections on %s? (pg_isready -h %s -p %d)\n"+
		"  check: are the host and port in the URL right? (%s)", where, cfg.Host, cfg.Port, urlFormat)
	if errors.As(err, &dnsErr) {
		check = fmt.Sprintf("  check: the host name %q in the URL (%s)", cfg.Host, urlFormat)
	}
	longer := "to wait for it at start, set a database wait (herald serve --database-wait 30s)"
	if wait > 0 {
		longer = fmt.Sprintf("to wait longer than %v at start: herald serve --database-wait %v", wait, 4*wait)
	}
	return fmt.Errorf("%s%s: %w\n%s\n  %s", head, gaveUp, err, check, longer)
}

// migrate applies the migrations: over a session of ListenDatabaseURL when
// it is set (the migrations hold a session lock, which a pooler in
// transaction mode cannot keep), else over pool.
func (s *Server) migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if s.cfg.ListenDatabaseURL != "" {
		direct, err := Connect(ctx, s.cfg.ListenDatabaseURL, s.cfg.DatabaseWait, s.cfg.Logger)
		if err != nil {
			return fmt.Errorf("listen database URL: %w", err)
		}
		defer direct.Close()
		pool = direct
	}
	if err := migrations.Up(ctx, pool); err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	return nil
}
