package checkpoint

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/sensitive"
	"github.com/capoller/capoller/poller/testenv"
)

func TestParseRedisURLForms(t *testing.T) {
	type want struct {
		kind             string // single, cluster, sentinel
		addrs            []string
		user, password   string
		db               int
		master           string
		sentinelPassword string
		tls              bool
		dialTimeout      time.Duration
	}
	for _, tc := range []struct {
		raw  string
		want want
	}{
		{"redis://127.0.0.1:6379/0", want{kind: "single", addrs: []string{"127.0.0.1:6379"}}},
		{"rediss://u:p%40ss@cache:6380/2?dial_timeout=3", want{kind: "single", addrs: []string{"cache:6380"}, user: "u", password: "p@ss", db: 2, tls: true, dialTimeout: 3 * time.Second}},
		{"redis+cluster://a:7000,b:7001,[::1]:7002", want{kind: "cluster", addrs: []string{"a:7000", "b:7001", "[::1]:7002"}}},
		{"redis+cluster://:s3cret@a,b/", want{kind: "cluster", addrs: []string{"a:6379", "b:6379"}, password: "s3cret"}},
		{"rediss+cluster://user:pa%2Cs%2Fs@a:7000,b:7001/0?dial_timeout=2s&skip_verify=true", want{kind: "cluster", addrs: []string{"a:7000", "b:7001"},
			user: "user", password: "pa,s/s", tls: true, dialTimeout: 2 * time.Second}},
		{"redis+sentinel://s1,s2:26380/mymaster", want{kind: "sentinel", addrs: []string{"s1:26379", "s2:26380"}, master: "mymaster"}},
		{"redis+sentinel://:pw@s1:26379/my%20master/3?sentinel_password=sp", want{kind: "sentinel", addrs: []string{"s1:26379"},
			password: "pw", db: 3, master: "my master", sentinelPassword: "sp"}},
		{"REDISS+SENTINEL://s1/m?read_timeout=1s", want{kind: "sentinel", addrs: []string{"s1:26379"}, master: "m", tls: true}},
	} {
		target, err := parseRedisURL(tc.raw)
		if err != nil {
			t.Errorf("%s: %v", tc.raw, err)
			continue
		}
		var got want
		switch {
		case target.single != nil:
			o := target.single
			got = want{kind: "single", addrs: []string{o.Addr}, user: o.Username, password: o.Password, db: o.DB, tls: o.TLSConfig != nil, dialTimeout: o.DialTimeout}
		case target.cluster != nil:
			o := target.cluster
			got = want{kind: "cluster", addrs: o.Addrs, user: o.Username, password: o.Password, tls: o.TLSConfig != nil, dialTimeout: o.DialTimeout}
			if o.TLSConfig != nil && (o.TLSConfig.ServerName != "" || !o.TLSConfig.InsecureSkipVerify) {
				t.Errorf("%s: TLS %+v, want each node checked by its own address, and skip_verify honoured", tc.raw, o.TLSConfig)
			}
		case target.failover != nil:
			o := target.failover
			got = want{kind: "sentinel", addrs: o.SentinelAddrs, user: o.Username, password: o.Password, db: o.DB, master: o.MasterName,
				sentinelPassword: o.SentinelPassword, tls: o.TLSConfig != nil, dialTimeout: o.DialTimeout}
			if o.TLSConfig != nil && o.TLSConfig.ServerName != "" {
				t.Errorf("%s: TLS server name %q, want each node checked by its own address", tc.raw, o.TLSConfig.ServerName)
			}
		}
		if got.kind != tc.want.kind || !slices.Equal(got.addrs, tc.want.addrs) || got.user != tc.want.user || got.password != tc.want.password ||
			got.db != tc.want.db || got.master != tc.want.master || got.sentinelPassword != tc.want.sentinelPassword || got.tls != tc.want.tls ||
			got.dialTimeout != tc.want.dialTimeout {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.raw, got, tc.want)
		}
	}
}

// Every refusal starts with the redacted URL and quotes no part of the
// password, however the URL is mangled.
func TestParseRedisURLRefusals(t *testing.T) {
	const secret = "s3cretPW"
	for _, tc := range []struct{ raw, says string }{
		{"", "want redis://"},
		{"memcached://" + secret + "@h", "want redis://"},
		{"redis://u:" + secret + "@a:1,b:2", "redis+cluster://"},
		{"redis://u:" + secret + "@h:99999", "port out of range"},
		{"redis://u:" + secret + "@h:1/x", "invalid database number"},
		{"redis://u:" + secret + "@h:1:2", "host 1 of 1"},
		{"redis://u:" + secret + "/x@h/0", `an "@" after the host`},
		{"redis+cluster://u:" + secret + "#x@h", `an "@" after the host`},
		{"redis+cluster://u:" + secret + ",b:2", "host 1 of 2"},
		{"redis+cluster://u:" + secret + "@a:1,,b:2", "host 2 of 3 is empty"},
		{"redis+cluster://u:" + secret + "@a:0", "port out of range"},
		{"redis+cluster://u:" + secret + "@a:1/3", "only database 0"},
		{"redis+cluster://u:" + secret + "%zz@a:1", "not validly percent-encoded"},
		{"redis+cluster://u:" + secret + "@a:1?addr=b:2", "option addr"},
		{"redis+cluster://u:" + secret + "@a:1?sentinel_password=x", "only for redis+sentinel"},
		{"redis+cluster://u:" + secret + "@a:1?bogus=1", "unexpected option: bogus"},
		{"redis+cluster://u:" + secret + "@a:1?dial_timeout=soon", "dial_timeout"},
		{"redis+sentinel://u:" + secret + "@s1:26379", "the master's name"},
		{"redis+sentinel://u:" + secret + "@s1:26379/", "the master's name"},
		{"redis+sentinel://u:" + secret + "@s1/m/x", "the database"},
		{"redis+sentinel://u:" + secret + "@s1/m/1/2", "at most a database"},
		{"redis+sentinel://u:" + secret + "@s1/m?password=" + secret, "option password"},
		{"redis+sentinel://u:" + secret + "@s1/m?db=2", "option db"},
		{"rediss+sentinel://u:" + secret + "@s1/m?skip_verify=maybe", "skip_verify"},
		{"redis+cluster://u:" + secret + "@a:1?skip_verify=true", "only with TLS"},
	} {
		_, err := parseRedisURL(tc.raw)
		if err == nil {
			t.Errorf("%q accepted", tc.raw)
			continue
		}
		if _, oerr := OpenRedis(tc.raw, RedisAuth{}); oerr == nil || oerr.Error() != err.Error() {
			t.Errorf("%q: OpenRedis says %v, parse %v", tc.raw, oerr, err)
		}
		if CheckRedisURL(tc.raw, RedisAuth{}) == nil {
			t.Errorf("%q: CheckRedisURL accepts it", tc.raw)
		}
		msg := err.Error()
		if strings.Contains(msg, secret) || strings.Contains(msg, secret[:5]) {
			t.Errorf("%q: the error shows the password: %s", tc.raw, msg)
		}
		if !strings.HasPrefix(msg, "redis-url "+sensitive.RedactURL(tc.raw)+": ") || !strings.Contains(msg, tc.says) {
			t.Errorf("%q: error %q, want it to start with the redacted URL and say %q", tc.raw, msg, tc.says)
		}
	}
}

// someShards returns n shards of several accounts, sources and regions:
// their hash tags fall in slots all over the range.
func someShards(n int) []diff.Shard {
	var shards []diff.Shard
	sources := []diff.Source{diff.SourceECS, diff.SourceSWAS}
	for i := range n {
		shards = append(shards, diff.Shard{Account: fmt.Sprintf("acct%d", i%4), Source: sources[i%2], Region: fmt.Sprintf("region-%d", i)})
	}
	return shards
}

// commitThrough stages, commits with transitions, reads the history and
// loads every shard through a Redis checkpoint store on client.
func commitThrough(t *testing.T, client redis.UniversalClient, prefix string, shards []diff.Shard) {
	t.Helper()
	ctx := t.Context()
	s, err := NewRedis(client, RedisOptions{KeyPrefix: prefix, ChunkSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for _, shard := range shards {
		keys := []diff.Key{{InvokeID: "t-1"}, {InvokeID: "t-1", InstanceID: "i-1"}, {InvokeID: "t-2", InstanceID: "i-2"}}
		var updates []diff.Update
		var transitions []diff.Transition
		for i, k := range keys {
			updates = append(updates, diff.Update{Key: k, State: diff.State{Status: diff.StatusSuccess, ObservedAt: t0}})
			tr := diff.Transition{Account: shard.Account, Source: shard.Source, Region: shard.Region, Previous: diff.StatusRunning,
				Record: diff.Record{Key: k, Status: diff.StatusSuccess}, ObservedAt: t0.Add(time.Duration(i) * time.Second)}
			tr.ID = diff.EventID(tr)
			transitions = append(transitions, tr)
		}
		if err := s.Stage(ctx, shard, diff.Result{Transitions: transitions, Updates: updates}); err != nil {
			t.Fatalf("%s: stage: %v", shard, err)
		}
		if _, ok, err := s.Staged(ctx, shard); err != nil || !ok {
			t.Fatalf("%s: staged: %v, %v", shard, ok, err)
		}
		if err := s.Commit(ctx, shard, updates, transitions); err != nil {
			t.Fatalf("%s: commit: %v", shard, err)
		}
		if err := s.MarkKnown(ctx, shard); err != nil {
			t.Fatalf("%s: mark known: %v", shard, err)
		}
		if _, ok, err := s.Staged(ctx, shard); err != nil || ok {
			t.Fatalf("%s: staged after the commit: %v, %v", shard, ok, err)
		}
		entries, _, err := s.History(ctx, shard, "", 10)
		if err != nil || len(entries) != len(transitions) || entries[0].ID != transitions[0].ID {
			t.Fatalf("%s: history %+v, %v", shard, entries, err)
		}
		prev, err := s.Load(ctx, shard, keys)
		if err != nil || !prev.Known || len(prev.States) != len(keys) {
			t.Fatalf("%s: load known=%v %d states, %v", shard, prev.Known, len(prev.States), err)
		}
	}
}

// A redis+cluster:// URL naming one node of a real three-master cluster
// reaches all of it; commits of shards on every master work.
func TestOpenRedisCluster(t *testing.T) {
	cluster, prefix := testenv.RedisCluster(t)
	addrs := cluster.Options().Addrs
	client, err := OpenRedis("redis+cluster://"+addrs[1]+"/?dial_timeout=2s", RedisAuth{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	if _, ok := client.(*redis.ClusterClient); !ok {
		t.Fatalf("client %T, want a cluster client", client)
	}
	shards := someShards(12)
	commitThrough(t, client, prefix, shards)
	masters := map[string]bool{}
	for _, shard := range shards {
		addr, err := testenv.MasterOf(t.Context(), cluster, prefix+"meta:{"+shard.String()+"}")
		if err != nil {
			t.Fatal(err)
		}
		masters[addr] = true
	}
	if len(masters) != 3 {
		t.Errorf("the shards fell on %d masters (%v), want all 3", len(masters), masters)
	}
}

// A redis+sentinel:// URL finds the master through the sentinel, with
// the user information as the master's password.
func TestOpenRedisSentinel(t *testing.T) {
	s := testenv.RedisSentinel(t)
	client, err := OpenRedis(fmt.Sprintf("redis+sentinel://:%s@%s/%s/0", s.Password, strings.Join(s.SentinelAddrs, ","), s.MasterName), RedisAuth{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	if err := client.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("ping through the sentinel: %v", err)
	}
	commitThrough(t, client, testenv.Name("capoller_test")+":", someShards(4))

	wrong, err := OpenRedis(fmt.Sprintf("redis+sentinel://:wrong@%s/%s", s.SentinelAddrs[0], s.MasterName), RedisAuth{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = wrong.Close() }()
	if err := wrong.Ping(t.Context()).Err(); err == nil {
		t.Error("a wrong password reached the master")
	}
}

// FuzzRedisURLHidesPassword: whatever follows the user information (from
// its "@" on), an error never shows the password.
func FuzzRedisURLHidesPassword(f *testing.F) {
	for _, seed := range []struct{ scheme, password, rest string }{
		{"redis+cluster", "s3cretPW", "@a:1,b:2/"},
		{"redis+sentinel", "s3cretPW", "@s1/m/x"},
		{"redis", "s3cretPW", "@a:1,b:2"},
		{"rediss+cluster", "pa/ss0rd", "@h:1"},
		{"redis+sentinel", "pa?ss0rd", "@h:1/m"},
	} {
		f.Add(seed.scheme, seed.password, seed.rest)
	}
	f.Fuzz(func(t *testing.T, scheme, password, rest string) {
		if len(password) < 6 || strings.Trim(password, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" ||
			!strings.HasPrefix(rest, "@") || strings.Contains(rest, password[:4]) || strings.Contains(scheme, password[:4]) {
			return // not plainly a password, too short to tell apart, or written elsewhere too
		}
		raw := scheme + "://user:" + password + rest
		_, err := parseRedisURL(raw)
		if err != nil && strings.Contains(err.Error(), password) {
			t.Errorf("%q: the error shows the password: %v", raw, err)
		}
	})
}

// The Redis settings reach every form of redis-url: the cluster's and the
// sentinel's options get the user, the password and the TLS files.
func TestRedisAuthAppliesToEveryForm(t *testing.T) {
	p := testenv.NewPKI(t)
	auth := RedisAuth{Username: "alice", Password: "pw", CA: p.CA, Cert: p.ClientCert, Key: p.ClientKey}
	for _, raw := range []string{"rediss://127.0.0.1:6380/0", "rediss+cluster://127.0.0.1:7000,127.0.0.1:7001", "rediss+sentinel://:urlpw@127.0.0.1:26379/m/0"} {
		target, err := redisTargetOf(raw, auth)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		var user, password string
		var tc *tls.Config
		switch {
		case target.cluster != nil:
			user, password, tc = target.cluster.Username, target.cluster.Password, target.cluster.TLSConfig
		case target.failover != nil:
			user, password, tc = target.failover.Username, target.failover.Password, target.failover.TLSConfig
		default:
			user, password, tc = target.single.Username, target.single.Password, target.single.TLSConfig
		}
		if user != "alice" || password != "pw" || tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 {
			t.Errorf("%s: user %q, password %q, TLS %+v", raw, user, password, tc)
		}
	}
}

// wantRedis pings Redis through OpenRedis, as the store does, and wants
// it to answer (want == "") or to fail with an error holding want and no
// secret.
func wantRedis(t *testing.T, what, url string, auth RedisAuth, want string) {
	t.Helper()
	client, err := OpenRedis(url, auth)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer func() { _ = client.Close() }()
	err = client.Ping(t.Context()).Err()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s: %v", what, err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("%s: err = %v; want %q", what, err, want)
	}
	if err != nil && strings.Contains(err.Error(), "S3cret") {
		t.Errorf("%s: the error shows the password: %v", what, err)
	}
}

// Redis with an ACL user and TLS: the user and password from the settings
// (over the URL's) are taken and a wrong password is refused without
// being shown; rediss:// checks the server's certificate against
// redis-ca; a server that verifies clients takes redis-cert and
// redis-key.
func TestRedisAuthACLAndTLS(t *testing.T) {
	if !testenv.RedisHasTLS(t) {
		t.Skip("redis-server was built without TLS (BUILD_TLS=yes); the CI machine's has it")
	}
	p := testenv.NewPKI(t)
	plain, tlsAddr := testenv.RedisAuthServer(t, p, "optional")
	alice := RedisAuth{Username: "alice", Password: "pw-S3cret-right"}
	wantRedis(t, "alice's password", "redis://"+plain+"/0", alice, "")
	wantRedis(t, "the settings over the URL's user", "redis://bob:pw-S3cret-wrong@"+plain+"/0", alice, "")
	wantRedis(t, "a wrong password", "redis://"+plain+"/0", RedisAuth{Username: "alice", Password: "pw-S3cret-wrong"}, "WRONGPASS")
	wantRedis(t, "no user", "redis://"+plain+"/0", RedisAuth{}, "NOAUTH")

	withCA := alice
	withCA.CA = p.CA
	wantRedis(t, "rediss with the CA", "rediss://"+tlsAddr+"/0", withCA, "")
	wantRedis(t, "rediss without the CA", "rediss://"+tlsAddr+"/0", alice, "certificate signed by unknown authority")
	other := alice
	other.CA = p.OtherCA
	wantRedis(t, "rediss with another CA", "rediss://"+tlsAddr+"/0", other, "certificate signed by unknown authority")

	_, verifying := testenv.RedisAuthServer(t, p, "yes")
	withCert := withCA
	withCert.Cert, withCert.Key = p.ClientCert, p.ClientKey
	wantRedis(t, "a client certificate", "rediss://"+verifying+"/0", withCert, "")
	client, err := OpenRedis("rediss://"+verifying+"/0", withCA)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	if err := client.Ping(t.Context()).Err(); err == nil {
		t.Error("a server that verifies clients answered one without a certificate")
	}
}

// redis-ca with skip_verify=true in the URL would load the CA and check
// nothing: the operator who names a CA means the server's certificate to
// be verified, so the pair is refused rather than silently unverified.
func TestRedisCAWithSkipVerifyRefused(t *testing.T) {
	p := testenv.NewPKI(t)
	for _, raw := range []string{"rediss://127.0.0.1:6380/0?skip_verify=true", "rediss+cluster://127.0.0.1:7000,127.0.0.1:7001?skip_verify=true"} {
		err := CheckRedisURL(raw, RedisAuth{CA: p.CA})
		if err == nil || !strings.Contains(err.Error(), "skip_verify") {
			t.Errorf("%s with redis-ca: %v; want skip_verify refused", raw, err)
		}
	}
	if err := CheckRedisURL("rediss://127.0.0.1:6380/0?skip_verify=true", RedisAuth{Cert: p.ClientCert, Key: p.ClientKey}); err != nil {
		t.Errorf("a client certificate with skip_verify (no CA named): %v", err)
	}
}
