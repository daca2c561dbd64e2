package checkpoint_test

import (
	"errors"
	"net/url"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/poller/testenv"
)

// TestMayComeBackTellsWaitsFromFacts uses go-redis's own errors: a closed
// port, a name that does not resolve and a server still loading may come
// back; a database index out of range, an unknown command's refusal and
// a TLS failure will not.
func TestMayComeBackTellsWaitsFromFacts(t *testing.T) {
	closed := testenv.ClosedAddr(t)
	ping := func(opts *redis.Options) error {
		opts.MaxRetries = -1
		c := redis.NewClient(opts)
		defer c.Close()
		return c.Ping(t.Context()).Err()
	}
	u, err := url.Parse(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/99"
	bad, err := redis.ParseURL(u.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		err  error
		back bool
	}{
		{"a closed port", ping(&redis.Options{Addr: closed}), true},
		{"a name that does not resolve", ping(&redis.Options{Addr: "capoller-nowhere.invalid:6379"}), true},
		{"a server loading its dataset", errors.New("LOADING Redis is loading the dataset in memory"), true},
		{"a database index out of range", ping(bad), false},
		{"wrong credentials", errors.New("WRONGPASS invalid username-password pair or user is disabled."), false},
		{"an ACL refusal", errors.New("NOPERM User alice has no permissions to run the 'eval' command"), false},
		{"a TLS failure", errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"), false},
		{"no error", nil, false},
	} {
		if (c.err == nil) != (c.what == "no error") {
			t.Fatalf("%s: error %v", c.what, c.err)
		}
		if got := checkpoint.MayComeBack(c.err); got != c.back {
			t.Errorf("%s (%v): MayComeBack %v, want %v", c.what, c.err, got, c.back)
		}
	}
}
