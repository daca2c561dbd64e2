package publisher

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/capoller/capoller/poller/sensitive"
)

// NATSAuth is how [Dial] authenticates to NATS and checks the servers'
// certificates. At most one way to authenticate: a creds file (a user JWT
// and its nkey seed), an nkey seed file, a token, or a user and password.
// CA names the CAs that sign the servers' certificates (default the
// system's); Cert and Key are a client certificate, for servers that
// verify clients. Either turns TLS on, whatever the URL's scheme. The
// creds, token, password and TLS files are read again at each connection,
// so a rotated one is taken at the next reconnect; the nkey seed file is
// read once, at start-up: rotating it takes a restart. Its YAML keys are
// the names of capoller's settings, which its errors name.
type NATSAuth struct {
	// Creds names a creds file: a user JWT and its nkey seed, as nsc
	// writes them.
	Creds string `yaml:"nats-creds"`
	// Nkey names a file holding a user's nkey seed (SU…).
	Nkey string `yaml:"nats-nkey-seed"`
	// Token, or the file TokenFile holds, is an authentication token.
	Token     string `yaml:"nats-token"`
	TokenFile string `yaml:"nats-token-file"`
	// User authenticates with Password, or with the file PasswordFile
	// holds.
	User         string `yaml:"nats-user"`
	Password     string `yaml:"nats-password"`
	PasswordFile string `yaml:"nats-password-file"`
	// CA, Cert and Key name PEM files: the CAs, and a client certificate
	// and its private key.
	CA   string `yaml:"nats-ca"`
	Cert string `yaml:"nats-cert"`
	Key  string `yaml:"nats-key"`
}

// Check validates the settings and reads the files they name, as [Dial]
// would, for a configuration's validation. natsURL is the URL Dial will
// be given, whose user information must not be a second way to
// authenticate. Each error names the setting (and a file), never a secret.
func (a NATSAuth) Check(natsURL string) []error {
	var errs []error
	var ways []string
	if a.Creds != "" {
		ways = append(ways, "nats-creds")
	}
	if a.Nkey != "" {
		ways = append(ways, "nats-nkey-seed")
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
			errs = append(errs, fmt.Errorf("nats-nkey-seed %s: %w", a.Nkey, sensitive.WithoutPath(err)))
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
func natsOptions(a NATSAuth) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case a.Creds != "":
		opts = append(opts, nats.UserCredentials(a.Creds))
	case a.Nkey != "":
		o, err := nats.NkeyOptionFromSeed(a.Nkey)
		if err != nil {
			return nil, fmt.Errorf("nats-nkey-seed %s: %w", a.Nkey, sensitive.WithoutPath(err))
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
