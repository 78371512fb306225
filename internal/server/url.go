package server

import (
	"net/url"
	"regexp"
	"strings"
)

// kvPassword matches a password in a keyword/value connection string
// (password=secret, password = 'a secret').
var kvPassword = regexp.MustCompile(`\b(ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'|\S*)`)

// redactURL hides the passwords of a database URL for logs and errors: the
// user's (postgres://user:PASSWORD@...), a password or sslpassword
// parameter, and both in the keyword/value form (host=... password=...).
func redactURL(raw string) string {
	if !strings.HasPrefix(raw, "postgres://") && !strings.HasPrefix(raw, "postgresql://") {
		return kvPassword.ReplaceAllString(raw, "${1}password=xxxxx")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	q := u.Query()
	for _, k := range []string{"password", "sslpassword"} {
		if q.Has(k) {
			q.Set(k, "xxxxx")
			u.RawQuery = q.Encode()
		}
	}
	return u.Redacted()
}
