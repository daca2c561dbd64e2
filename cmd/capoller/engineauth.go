package main

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/internal/sensitive"
)

// natsAuth is how capoller authenticates to NATS and checks the servers'
// certificates. At most one way to authenticate: a creds file (a user JWT
// and its nkey seed), an nkey seed file, a token, or a user and password.
// CA names the CAs that sign the servers' certificates (default the
// system's); Cert and Key are a client certificate, for servers that
// verify clients. Either turns TLS on, whatever the URL's scheme. The
// creds, token, password and TLS files are read again at each connection,
// so a rotated one is taken at the next reconnect; the nkey seed file is
// read once, at start-up: rotating it takes a restart.
type natsAuth struct {
	Creds        string `yaml:"nats-creds"`
	Nkey         string `yaml:"nats-nkey"`
	Token        string `yaml:"nats-token"`
	TokenFile    string `yaml:"nats-token-file"`
	User         string `yaml:"nats-user"`
	Password     string `yaml:"nats-password"`
	PasswordFile string `yaml:"nats-password-file"`
	CA           string `yaml:"nats-ca"`
	Cert         string `yaml:"nats-cert"`
	Key          string `yaml:"nats-key"`
}

// natsAuthSettings are the settings of natsAuth. notify takes them too
// (see bindSettings).
func natsAuthSettings() []setting {
	field := func(f func(*natsAuth) *string) func(*config, string) error {
		return str(func(c *config) *string { return f(&c.NATS) })
	}
	return []setting{
		{"nats-creds", "NATS credentials file: a user JWT and its nkey seed, as nsc writes them", field(func(a *natsAuth) *string { return &a.Creds })},
		{"nats-nkey", "NATS nkey seed file (a user seed, SU…)", field(func(a *natsAuth) *string { return &a.Nkey })},
		{"nats-token", "NATS authentication token: set it in the environment, or use nats-token-file", field(func(a *natsAuth) *string { return &a.Token })},
		{"nats-token-file", "file holding the NATS authentication token", field(func(a *natsAuth) *string { return &a.TokenFile })},
		{"nats-user", "NATS user, with nats-password", field(func(a *natsAuth) *string { return &a.User })},
		{"nats-password", "NATS user's password: set it in the environment, or use nats-password-file", field(func(a *natsAuth) *string { return &a.Password })},
		{"nats-password-file", "file holding the NATS user's password", field(func(a *natsAuth) *string { return &a.PasswordFile })},
		{"nats-ca", "PEM file of the CAs that sign the NATS servers' certificates (default the system's); turns TLS on", field(func(a *natsAuth) *string { return &a.CA })},
		{"nats-cert", "PEM client certificate for NATS servers that verify clients, with nats-key; turns TLS on", field(func(a *natsAuth) *string { return &a.Cert })},
		{"nats-key", "PEM private key of nats-cert", field(func(a *natsAuth) *string { return &a.Key })},
	}
}

// redisAuthSettings are the settings of checkpoint.RedisAuth.
func redisAuthSettings() []setting {
	field := func(f func(*checkpoint.RedisAuth) *string) func(*config, string) error {
		return str(func(c *config) *string { return f(&c.Redis) })
	}
	return []setting{
		{"redis-username", "Redis ACL user, instead of the redis-url's", field(func(a *checkpoint.RedisAuth) *string { return &a.Username })},
		{"redis-password", "Redis password, instead of the redis-url's: set it in the environment, or use redis-password-file", field(func(a *checkpoint.RedisAuth) *string { return &a.Password })},
		{"redis-password-file", "file holding the Redis password", field(func(a *checkpoint.RedisAuth) *string { return &a.PasswordFile })},
		{"redis-ca", "PEM file of the CAs that sign the Redis servers' certificates (default the system's), with a rediss URL", field(func(a *checkpoint.RedisAuth) *string { return &a.CA })},
		{"redis-cert", "PEM client certificate for Redis servers that verify clients (tls-auth-clients), with redis-key and a rediss URL", field(func(a *checkpoint.RedisAuth) *string { return &a.Cert })},
		{"redis-key", "PEM private key of redis-cert", field(func(a *checkpoint.RedisAuth) *string { return &a.Key })},
	}
}

// bindSettings registers list on fs for a command that takes only these
// of run's settings (notify takes NATS's): the environment,
// CAPOLLER_<NAME>, sets c first and a flag over it, as in loadConfig.
func bindSettings(fs *flag.FlagSet, list []setting, c *config, getenv func(string) string) {
	defaults := settingDefaults(*c)
	for _, s := range list {
		if v := getenv(envName(s.name)); v != "" {
			_ = s.set(c, v) // strings: they take any value
		}
		usage := s.usage + " (env " + envName(s.name) + ")"
		if d := defaults[s.name]; d != "" {
			usage = s.usage + " (default " + d + ", env " + envName(s.name) + ")"
		}
		fs.Func(s.name, usage, func(v string) error { return s.set(c, v) })
	}
}

// settingsNamed returns the settings of these names, for a subcommand that
// takes a few of run's.
func settingsNamed(names ...string) []setting {
	var out []setting
	for _, s := range settings() {
		if slices.Contains(names, s.name) {
			out = append(out, s)
		}
	}
	return out
}

// set reports whether any NATS authentication or TLS setting is set.
func (a natsAuth) set() bool { return a != natsAuth{} }

// check validates the settings and reads the files they name, as a
// connection would. Each error names the setting (and a file), never a
// secret.
func (a natsAuth) check(natsURL string) []error {
	var errs []error
	var ways []string
	if a.Creds != "" {
		ways = append(ways, "nats-creds")
	}
	if a.Nkey != "" {
		ways = append(ways, "nats-nkey")
	}
	if a.Token != "" || a.TokenFile != "" {
		ways = append(ways, "nats-token")
	}
	if a.User != "" || a.Password != "" || a.PasswordFile != "" {
		ways = append(ways, "nats-user")
	}
	if len(ways) > 1 {
		errs = append(errs, fmt.Errorf("%s: choose one way to authenticate to NATS", strings.Join(ways, " and ")))
	}
	if len(ways) > 0 && urlHasUser(natsURL) {
		errs = append(errs, fmt.Errorf("%s and user information in nats-url: authenticate in one place", ways[0]))
	}
	if a.Creds != "" {
		if err := checkCreds(a.Creds); err != nil {
			errs = append(errs, fmt.Errorf("nats-creds %s: %w", a.Creds, err))
		}
	}
	if a.Nkey != "" {
		if _, err := nats.NkeyOptionFromSeed(a.Nkey); err != nil {
			errs = append(errs, fmt.Errorf("nats-nkey %s: %w", a.Nkey, sensitive.WithoutPath(err)))
		}
	}
	if _, err := sensitive.Secret("nats-token", a.Token, a.TokenFile); err != nil {
		errs = append(errs, err)
	}
	if _, err := sensitive.Secret("nats-password", a.Password, a.PasswordFile); err != nil {
		errs = append(errs, err)
	}
	if a.User == "" && (a.Password != "" || a.PasswordFile != "") {
		errs = append(errs, errors.New("nats-password: needs nats-user"))
	}
	if a.User != "" && a.Password == "" && a.PasswordFile == "" {
		errs = append(errs, errors.New("nats-user: needs nats-password (or nats-password-file)"))
	}
	if _, _, err := sensitive.LoadTLSFiles("nats", a.CA, a.Cert, a.Key); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// checkCreds checks that a creds file holds a user JWT and a user seed.
func checkCreds(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return sensitive.WithoutPath(err)
	}
	if jwt, _ := nkeys.ParseDecoratedJWT(raw); strings.Count(jwt, ".") != 2 || strings.ContainsAny(jwt, " \t\r\n") {
		return errors.New("no user JWT in it: want the creds file nsc writes")
	}
	kp, err := nkeys.ParseDecoratedUserNKey(raw)
	if err != nil {
		return fmt.Errorf("no user nkey seed in it: %w", err)
	}
	kp.Wipe()
	return nil
}

// urlHasUser reports whether a URL of a comma-separated list holds user
// information (a user, a password or a NATS token).
func urlHasUser(raw string) bool {
	for _, s := range strings.Split(raw, ",") {
		if s = strings.TrimSpace(s); !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		if u, err := url.Parse(s); err == nil && u.User != nil {
			return true
		}
	}
	return false
}

// natsOptions turns the settings into nats.Connect's options. It reads
// the token or password file; the others nats.go reads as it connects.
func natsOptions(a natsAuth) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case a.Creds != "":
		opts = append(opts, nats.UserCredentials(a.Creds))
	case a.Nkey != "":
		o, err := nats.NkeyOptionFromSeed(a.Nkey)
		if err != nil {
			return nil, fmt.Errorf("nats-nkey %s: %w", a.Nkey, sensitive.WithoutPath(err))
		}
		opts = append(opts, o)
	case a.Token != "" || a.TokenFile != "":
		token, err := sensitive.Secret("nats-token", a.Token, a.TokenFile)
		if err != nil {
			return nil, err
		}
		if a.TokenFile == "" {
			opts = append(opts, nats.Token(token))
			break
		}
		opts = append(opts, nats.TokenHandler(rereading("nats-token", a.TokenFile, token)))
	case a.User != "":
		password, err := sensitive.Secret("nats-password", a.Password, a.PasswordFile)
		if err != nil {
			return nil, err
		}
		if a.PasswordFile == "" {
			opts = append(opts, nats.UserInfo(a.User, password))
			break
		}
		reread := rereading("nats-password", a.PasswordFile, password)
		opts = append(opts, nats.UserInfoHandler(func() (string, string) { return a.User, reread() }))
	}
	if a.CA != "" {
		opts = append(opts, nats.RootCAs(a.CA))
	}
	if a.Cert != "" {
		opts = append(opts, nats.ClientCert(a.Cert, a.Key))
	}
	return opts, nil
}

// connectNATS connects to the NATS servers of url with the authentication
// and TLS of a, and then extra (a name, handlers…): every command that
// talks to NATS dials through it. Its errors start with "connect to NATS
// at <url>", the URL redacted, and hold no secret.
func connectNATS(url string, a natsAuth, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := natsOptions(a)
	if err == nil {
		var nc *nats.Conn
		if nc, err = nats.Connect(url, append(opts, extra...)...); err == nil {
			return nc, nil
		}
	}
	return nil, fmt.Errorf("connect to NATS at %s: %w", redactURL(url), sensitive.WithoutURL(err))
}

// connectJetStream is connectNATS, and a JetStream context on the
// connection, which the caller closes.
func connectJetStream(url string, a natsAuth, extra ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := connectNATS(url, a, extra...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// rereading returns the secret of file as it reads at each call, or the
// last it read if it cannot be read now (a Secret volume being rewritten):
// the client calls it at each connection, so a rotated token or password
// is taken at the next reconnect. first is the secret read at start-up.
func rereading(name, file, first string) func() string {
	var mu sync.Mutex
	last := first
	return func() string {
		s, err := sensitive.Secret(name, "", file)
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			last = s
		}
		return last
	}
}
