package sensitive

import (
	"errors"
	"net/url"
	"strings"
)

// RedactURL returns raw fit for a log line or an error message: user
// information (a user, a password, or a NATS token) becomes REDACTED, as do
// the values of query parameters named like credentials. Each URL of a
// comma-separated list (NATS takes one) is redacted on its own. A URL that
// does not parse is redacted textually; it is never echoed as it is.
func RedactURL(raw string) string {
	raw = redactQuery(raw) // first: a secret value may hold a comma
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		parts[i] = redactOne(p)
	}
	return strings.Join(parts, ",")
}

func redactOne(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.Host == "" || strings.Contains(u.Path+u.Fragment, "@") {
		return redactText(raw)
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	return u.String()
}

// redactText redacts a URL that does not parse: everything between "://"
// (or the start) and the last "@" becomes REDACTED, and so does a port
// that is not a number (the password of "user:pass" that lost its "@").
// It is for one URL, never for a message: in "dial tcp 10.0.0.1:6379:
// connect: connection refused" it would take the cause for a password.
func redactText(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		scheme, rest = "", raw
	} else {
		scheme += "://"
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		return scheme + "REDACTED" + rest[at:]
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	host := rest[:end]
	if colon := strings.LastIndex(host, ":"); colon >= 0 && strings.Trim(host[colon+1:], "0123456789") != "" && !strings.HasSuffix(host, "]") {
		host = host[:colon+1] + "REDACTED"
	}
	return scheme + host + rest[end:]
}

// redactQuery replaces the value of every query parameter named like a
// credential, in a URL or a list of them, with REDACTED. A value ends at
// "&", ";", "#" or the start of the list's next URL, so a comma in a
// secret does not split it.
func redactQuery(raw string) string {
	var b strings.Builder
	query := false
	for i := 0; i < len(raw); {
		c := raw[i]
		b.WriteByte(c)
		i++
		switch {
		case c == '?' || query && (c == '&' || c == ';'):
			query = true
			end := i + strings.IndexFunc(raw[i:]+"=", func(r rune) bool { return strings.ContainsRune("=&;#,", r) })
			name := raw[i:end]
			b.WriteString(name)
			i = end
			if i < len(raw) && raw[i] == '=' && secretParam(name) {
				b.WriteString("=REDACTED")
				i = valueEnd(raw, i+1)
			}
		case c == '#' || c == ',' && startsURL(raw[i:]):
			query = false
		}
	}
	return b.String()
}

// valueEnd is the index where the query value starting at i ends.
func valueEnd(raw string, i int) int {
	for ; i < len(raw); i++ {
		switch raw[i] {
		case '&', ';', '#':
			return i
		case ',':
			if startsURL(raw[i+1:]) {
				return i
			}
		}
	}
	return i
}

// startsURL reports whether s starts with a scheme and "://".
func startsURL(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	return ok && scheme != "" && strings.Trim(strings.ToLower(scheme), "abcdefghijklmnopqrstuvwxyz0123456789+.-") == ""
}

// secretParam reports whether a query parameter name looks like a
// credential: password, pass, pwd, token, secret, auth, key, accesskeyid,
// signature, securitytoken…, in any case and with any "_" or "-".
func secretParam(name string) bool {
	if n, err := url.QueryUnescape(name); err == nil {
		name = n
	}
	name = strings.ToLower(strings.NewReplacer("_", "", "-", "", ".", "").Replace(name))
	for _, s := range []string{"pass", "pwd", "token", "secret", "auth", "signature", "credential", "accesskey", "apikey", "privatekey"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return strings.HasSuffix(name, "key")
}

// RedactMessage returns a message fit to show: a library's log line or an
// error's text, which may quote a URL. Each word that is a URL
// ("scheme://…") is redacted as RedactURL does, and so is each
// "user:password@host"; every other word is kept as it is, so that the
// cause ("connect: connection refused", "ERR DB index is out of range")
// stays readable.
func RedactMessage(msg string) string {
	var b strings.Builder
	for len(msg) > 0 {
		i := strings.IndexFunc(msg, isSpace)
		if i < 0 {
			i = len(msg)
		}
		b.WriteString(redactWord(msg[:i]))
		j := i + len(msg[i:]) - len(strings.TrimLeftFunc(msg[i:], isSpace))
		b.WriteString(msg[i:j])
		msg = msg[j:]
	}
	return b.String()
}

func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }

// redactWord redacts one word of a message if it holds a URL or user
// information, keeping the quotes and punctuation around it.
func redactWord(w string) string {
	start := strings.IndexFunc(w, func(r rune) bool { return !strings.ContainsRune("\"'`([{<", r) })
	if start < 0 {
		return w
	}
	end := len(strings.TrimRightFunc(w, func(r rune) bool { return strings.ContainsRune("\"'`)]}>,;.:", r) }))
	if end <= start {
		return w
	}
	core := w[start:end]
	switch {
	case strings.Contains(core, "://"):
		core = RedactURL(core)
	case hasUserInfo(core):
		core = "REDACTED" + core[strings.LastIndex(core, "@"):]
	default:
		return w
	}
	return w[:start] + core + w[end:]
}

// hasUserInfo reports whether w is "user:password@host…": a colon before
// its last "@", and a host after it.
func hasUserInfo(w string) bool {
	at := strings.LastIndex(w, "@")
	return at > 0 && at < len(w)-1 && strings.Contains(w[:at], ":")
}

// WithoutURL returns err fit to show. A URL parse error quotes the whole
// URL (credentials included): it becomes only that the URL is invalid.
// Another URL error (an HTTP request's "Get "…": dial tcp …") keeps its
// operation and its cause, with the URL redacted.
func WithoutURL(err error) error {
	var uerr *url.Error
	if !errors.As(err, &uerr) {
		return err
	}
	if uerr.Op == "parse" {
		return errors.New("not a valid URL")
	}
	return &url.Error{Op: uerr.Op, URL: RedactURL(uerr.URL), Err: uerr.Err}
}
