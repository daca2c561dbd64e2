package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/sensitive"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/events"
)

// checkDefaultChainEndpoint checks the SDK's default credential chain,
// which the default account uses when no accounts and no demo keys are
// given. Credentials found nowhere are said first, with where they were
// looked for. Then: plain http to the endpoint would carry the chain's STS
// security token in the clear, unless --insecure-endpoint (a local
// emulator) or the chain's first source is a pair of keys in the
// environment without a token.
func (c config) checkDefaultChainEndpoint(getenv func(string) string) error {
	if len(c.Accounts) > 0 || c.accessKeyID != "" {
		return nil
	}
	chain := cloudassist.ProbeDefaultChain(getenv, getenv("HOME"))
	if err := chain.Missing(); err != nil {
		return err
	}
	if c.InsecureEndpoint || !strings.HasPrefix(strings.ToLower(c.Endpoint), "http://") || !chain.STS {
		return nil
	}
	return fmt.Errorf("endpoint %s: plain http would send the default credential chain's STS security token in the clear "+
		"(ALIBABA_CLOUD_SECURITY_TOKEN, a profile, OIDC or the instance's RAM role); use https, or --insecure-endpoint for a local emulator",
		sensitive.RedactURL(c.Endpoint))
}

// outputOptions reads the output settings, naming the one that is wrong.
func (c config) outputOptions() (cloudassist.OutputOptions, error) {
	var errs []error
	o := cloudassist.OutputOptions{MaxBytes: c.OutputMaxBytes, NoBuiltinRedact: !c.OutputRedactBuiltin}
	f, err := cloudassist.ParseOutputFor(c.Output)
	if err != nil {
		errs = append(errs, fmt.Errorf("output: %w", err))
	}
	o.For = f
	if c.OutputMaxBytes < 64 || c.OutputMaxBytes > 512<<10 {
		errs = append(errs, fmt.Errorf("output-max-bytes %d: want 64 to 524288 (512 KiB)", c.OutputMaxBytes))
	}
	for i, p := range c.OutputRedact {
		if strings.TrimSpace(p) == "" {
			errs = append(errs, fmt.Errorf("output-redact: pattern %d is empty (it would match everywhere)", i+1))
			continue
		}
		re, err := regexp.Compile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("output-redact: pattern %d %q: %w", i+1, p, err))
			continue
		}
		if re.MatchString("") {
			errs = append(errs, fmt.Errorf("output-redact: pattern %d %q matches the empty string, so everywhere", i+1, p))
			continue
		}
		o.Redact = append(o.Redact, re)
	}
	return o, errors.Join(errs...)
}

// validate checks every setting, naming each one that is wrong and why;
// it reports them all at once, so that an operator fixes them in one go.
func (c config) validate() error {
	var errs []error
	for _, check := range []func() []error{
		c.validatePrintable, c.validateShards, c.validatePolling, c.validateEngines,
		c.validateProcess, c.validateStore, c.validateDelivery, c.validateHints,
	} {
		errs = append(errs, check()...)
	}
	return errors.Join(errs...)
}

// validatePrintable refuses control characters in the string settings.
func (c config) validatePrintable() []error {
	var errs []error
	for _, s := range []struct{ name, value string }{
		{"endpoint", c.Endpoint}, {"initial", c.Initial}, {"strategy", c.Strategy}, {"redis-url", c.RedisURL},
		{"key-prefix", c.KeyPrefix}, {"nats-url", c.NATSURL}, {"stream", c.Stream}, {"subject-prefix", c.SubjectPrefix},
		{"checkpoint", c.Checkpoint}, {"bucket", c.Bucket}, {"data-dir", c.DataDir}, {"metrics-addr", c.MetricsAddr},
		{"pprof-addr", c.PprofAddr}, {"log-format", c.LogFormat}, {"log-level", c.LogLevel}, {"replica-id", c.ReplicaID},
		{"nats-creds", c.NATS.Creds}, {"nats-nkey-seed", c.NATS.Nkey}, {"nats-token", c.NATS.Token}, {"nats-token-file", c.NATS.TokenFile},
		{"nats-user", c.NATS.User}, {"nats-password", c.NATS.Password}, {"nats-password-file", c.NATS.PasswordFile},
		{"nats-ca", c.NATS.CA}, {"nats-cert", c.NATS.Cert}, {"nats-key", c.NATS.Key},
		{"redis-username", c.Redis.Username}, {"redis-password", c.Redis.Password}, {"redis-password-file", c.Redis.PasswordFile},
		{"redis-ca", c.Redis.CA}, {"redis-cert", c.Redis.Cert}, {"redis-key", c.Redis.Key},
	} {
		if err := sensitive.Printable(s.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err)) // not the value: it may be a URL with a password
		}
	}
	return errs
}

// validateShards checks the endpoint and what is polled: regions and
// sources, or each account's.
func (c config) validateShards() []error {
	var errs []error
	if c.Endpoint != "" {
		if u, err := url.Parse(c.Endpoint); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			errs = append(errs, fmt.Errorf("endpoint %s: want an http(s) URL", sensitive.RedactURL(c.Endpoint)))
		} else if u.Scheme == "http" && !c.InsecureEndpoint {
			for _, a := range c.Accounts {
				if a.Credentials.SendsSecurityToken() {
					errs = append(errs, fmt.Errorf("endpoint %s: plain http would send account %q's STS security token in the clear; use https, or --insecure-endpoint for a local emulator",
						sensitive.RedactURL(c.Endpoint), a.Name))
				}
			}
		}
	}
	if len(c.Accounts) == 0 {
		errs = append(errs, checkShards("", c.Regions, c.Sources)...)
	} else {
		if c.Regions != nil || c.Sources != nil {
			errs = append(errs, errors.New("regions and sources: with accounts, each account lists its own"))
		}
		errs = append(errs, c.validateAccounts()...)
	}
	return errs
}

// validatePolling checks how each shard polls the API.
func (c config) validatePolling() []error {
	var errs []error
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval %v: must be positive", c.Interval))
	}
	if _, err := diff.ParseInitial(c.Initial); err != nil {
		errs = append(errs, err)
	}
	if _, err := cloudassist.ParseStrategy(c.Strategy); err != nil {
		errs = append(errs, err)
	}
	if c.ResyncEvery <= 0 {
		errs = append(errs, fmt.Errorf("resync-every %v: must be positive", c.ResyncEvery))
	}
	if _, err := c.outputOptions(); err != nil {
		errs = append(errs, err)
	}
	if math.IsNaN(c.QPS) || math.IsInf(c.QPS, 0) || c.QPS <= 0 {
		errs = append(errs, fmt.Errorf("qps %v: want a positive, finite number", c.QPS))
	}
	if c.ThrottleWindow <= 0 {
		errs = append(errs, fmt.Errorf("throttle-window %v: must be positive", c.ThrottleWindow))
	}
	if c.PageSize < 1 || c.PageSize > 50 {
		errs = append(errs, fmt.Errorf("page-size %d: want 1..50", c.PageSize))
	}
	if c.APITimeout <= 0 {
		errs = append(errs, fmt.Errorf("api-timeout %v: must be positive", c.APITimeout))
	}
	return errs
}

// validateEngines checks the checkpoint store's and NATS's addresses and
// names.
func (c config) validateEngines() []error {
	var errs []error
	switch c.Checkpoint {
	case "redis":
		if err := checkpoint.CheckRedisURL(c.RedisURL, c.Redis); err != nil {
			errs = append(errs, err)
		}
	case "natskv":
	default:
		errs = append(errs, fmt.Errorf("checkpoint %q: want redis or natskv", c.Checkpoint))
	}
	if c.NATSURL != "embedded" {
		if err := checkNATSURL(c.NATSURL); err != nil {
			errs = append(errs, err)
		}
		errs = append(errs, c.NATS.Check(c.NATSURL)...)
	} else if c.NATS != (publisher.NATSAuth{}) {
		errs = append(errs, errors.New("nats-creds, nats-nkey-seed, nats-token, nats-user, nats-ca and nats-cert: not with nats-url embedded, whose in-process server has neither TLS nor authentication"))
	}
	if publisher.ValidStreamName(c.Stream) != nil {
		errs = append(errs, fmt.Errorf("stream %q: want 1 to 255 characters of [A-Za-z0-9_-] (JetStream refuses whitespace, \".\", \"*\", \">\" and path separators)", c.Stream))
	}
	if !validBucket(c.Bucket) {
		errs = append(errs, fmt.Errorf("bucket %q: want 1 to %d characters of [A-Za-z0-9_-] (its stream is KV_<bucket>)", c.Bucket, maxBucketLen))
	}
	return errs
}

// validateProcess checks the process's own addresses, directory and id.
func (c config) validateProcess() []error {
	var errs []error
	if c.MetricsAddr != "" {
		if err := checkListenAddr(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("metrics-addr %q: %w", c.MetricsAddr, err))
		}
	}
	if c.PprofAddr != "" {
		if err := checkListenAddr(c.PprofAddr); err != nil {
			errs = append(errs, fmt.Errorf("pprof-addr %q: %w", c.PprofAddr, err))
		}
	}
	if c.NATSURL == "embedded" && c.DataDir == "" {
		errs = append(errs, errors.New("data-dir: required with an embedded NATS server"))
	}
	if c.ReplicaID != "" && (len(c.ReplicaID) > 128 || strings.Trim(c.ReplicaID, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "") {
		errs = append(errs, errors.New("replica-id: use at most 128 of [A-Za-z0-9._-]"))
	}
	return errs
}

// validateStore checks the checkpoint store's keys, replication and history.
func (c config) validateStore() []error {
	var errs []error
	if strings.ContainsAny(c.KeyPrefix, "{}") {
		errs = append(errs, errors.New("key-prefix: no braces: each shard's keys share a hash tag in braces, which keeps them in one Redis Cluster slot"))
	}
	if c.RedisReplicaWait < 0 || c.RedisReplicaGrace < 0 {
		errs = append(errs, fmt.Errorf("redis-replica-wait %v and redis-replica-grace %v: want 0 (off) or more", c.RedisReplicaWait, c.RedisReplicaGrace))
	} else if c.RedisReplicaWait > 0 && c.RedisReplicaWait < time.Millisecond {
		errs = append(errs, fmt.Errorf("redis-replica-wait %v: want 0 (off) or at least 1ms (WAIT counts in milliseconds)", c.RedisReplicaWait))
	}
	if c.HistoryMaxAge < 0 || c.HistoryMaxCount < 0 {
		errs = append(errs, fmt.Errorf("history-max-age %v and history-max-count %d: want 0 (no limit) or more", c.HistoryMaxAge, c.HistoryMaxCount))
	}
	return errs
}

// validateDelivery checks the lease, the stream's limits and the
// duplicate window that together make delivery exactly-once, and the log.
func (c config) validateDelivery() []error {
	var errs []error
	if c.LeaseTTL < 3*time.Second {
		errs = append(errs, fmt.Errorf("lease-ttl %v: want at least 3s (replicas renew every fifth of it)", c.LeaseTTL))
	}
	if c.StreamMaxAge < 0 || c.StreamMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("stream-max-age %v and stream-max-bytes %d: want 0 (no limit) or more", c.StreamMaxAge, c.StreamMaxBytes))
	}
	if c.StreamMaxAge > 0 && c.StreamMaxAge < c.DuplicateWindow {
		errs = append(errs, fmt.Errorf("stream-max-age %v: want at least duplicate-window (%v): JetStream refuses a duplicate window longer than the stream's max age", c.StreamMaxAge, c.DuplicateWindow))
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		errs = append(errs, fmt.Errorf("stream-replicas %d: want 1..5", c.StreamReplicas))
	}
	if c.DuplicateWindow < c.LeaseTTL+longestRetryPause && c.LeaseTTL >= 3*time.Second && c.DuplicateWindow >= longestRetryPause {
		errs = append(errs, fmt.Errorf("duplicate-window %v: want at least lease-ttl (%v) plus %v: a batch a dead replica published but did not commit is published again by the next owner once the lease expired, and must still be recognised as a duplicate", c.DuplicateWindow, c.LeaseTTL, longestRetryPause))
	}
	if c.DuplicateWindow < longestRetryPause {
		errs = append(errs, fmt.Errorf("duplicate-window %v: want at least %v, the longest pause before a shard retries a batch; a shorter window lets an outage store the same event twice", c.DuplicateWindow, longestRetryPause))
	}
	if err := publisher.ValidPrefix(c.SubjectPrefix); err != nil {
		errs = append(errs, err)
	}
	if c.LogSummaryEvery < 0 {
		errs = append(errs, fmt.Errorf("log-summary-every %v: want 0 (never) or more", c.LogSummaryEvery))
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		errs = append(errs, fmt.Errorf("log-format %q: want json or console", c.LogFormat))
	}
	return errs
}

// checkShards checks the regions and sources of one account; label
// prefixes each error with the account, or nothing for the default one.
func checkShards(label string, regions, sources []string) []error {
	var errs []error
	if len(regions) == 0 {
		errs = append(errs, fmt.Errorf("%sregions: at least one region is required", label))
	}
	for i, r := range regions {
		if !cloudassist.ValidRegion(r) {
			errs = append(errs, fmt.Errorf("%sregions: region %q: want lower-case letters, digits and \"-\", e.g. cn-hangzhou", label, r))
		}
		if slices.Contains(regions[:i], r) {
			errs = append(errs, fmt.Errorf("%sregions: %q is listed twice (a shard is polled by one loop)", label, r))
		}
	}
	if len(sources) == 0 {
		errs = append(errs, fmt.Errorf("%ssources: at least one source is required", label))
	}
	for i, s := range sources {
		switch s {
		case "ecs", "ecs-results", "swas":
		default:
			errs = append(errs, fmt.Errorf("%ssources: source %q: want ecs, ecs-results or swas", label, s))
		}
		if slices.Contains(sources[:i], s) {
			errs = append(errs, fmt.Errorf("%ssources: %q is listed twice (a shard is polled by one loop)", label, s))
		}
	}
	if slices.Contains(sources, "ecs") && slices.Contains(sources, "ecs-results") {
		errs = append(errs, fmt.Errorf("%ssources: ecs and ecs-results are two views of the same records, one shard; a region takes one of them", label))
	}
	return errs
}

// validateAccounts checks every account: its name, its shards and the
// shape of its credentials. Each error names the account and the setting.
func (c config) validateAccounts() []error {
	var errs []error
	for i, a := range c.Accounts {
		label := fmt.Sprintf("account %q: ", a.Name)
		if !validAccountName(a.Name) {
			label = fmt.Sprintf("accounts[%d]: ", i)
			if a.Name == "" {
				errs = append(errs, fmt.Errorf("%sname: required: 1 to 64 characters of [A-Za-z0-9_-]", label))
			} else {
				errs = append(errs, fmt.Errorf("%sname %q: want 1 to 64 characters of [A-Za-z0-9_-]", label, a.Name))
			}
		} else if j := slices.IndexFunc(c.Accounts[:i], func(b accountConfig) bool { return b.Name == a.Name }); j >= 0 {
			errs = append(errs, fmt.Errorf("%sname: listed twice, as accounts[%d] and accounts[%d]", label, j, i))
		}
		errs = append(errs, checkShards(label, a.Regions, a.Sources)...)
		if a.UID != "" && !validUID(a.UID) {
			errs = append(errs, fmt.Errorf("%suid: want the account's numeric Alibaba Cloud uid", label))
		}
		for _, err := range a.Credentials.Validate() {
			errs = append(errs, fmt.Errorf("%scredentials: %w", label, err))
		}
	}
	return errs
}

// validUID reports whether s can be an Alibaba Cloud account's uid.
func validUID(s string) bool { return s != "" && len(s) <= 32 && strings.Trim(s, "0123456789") == "" }

// validateHints checks the hints endpoint: an address, a token to check
// pushes against, TLS files in pairs, uids of digits.
func (c config) validateHints() []error {
	h := c.Hints
	if h.Listen == "" {
		return nil
	}
	var errs []error
	if err := checkListenAddr(h.Listen); err != nil {
		errs = append(errs, fmt.Errorf("hints-listen %q: %w", h.Listen, err))
	}
	if h.Token == "" && h.TokenFile == "" {
		errs = append(errs, errors.New("hints-listen: a token is required (CAPOLLER_HINTS_TOKEN or hints-token-file): the endpoint would take anyone's pushes"))
	}
	if h.Token != "" && h.TokenFile != "" {
		errs = append(errs, errors.New("hints-token and hints-token-file: choose one"))
	}
	if (h.TLSCert == "") != (h.TLSKey == "") {
		errs = append(errs, errors.New("hints-tls-cert and hints-tls-key: give both, or neither"))
	}
	if h.UID != "" && (!validUID(h.UID) || len(c.Accounts) > 0) {
		errs = append(errs, errors.New("hints-uid: want the default account's numeric uid, and no accounts (each account names its own uid)"))
	}
	return errs
}

// validAccountName reports whether name can name an account: 1 to 64
// characters of [A-Za-z0-9_-], a token of shard ids and subjects.
func validAccountName(name string) bool {
	return name != "" && len(name) <= 64 && events.EscapeToken(name) == name
}

// maxBucketLen is the longest key-value bucket name: its stream, KV_<name>,
// takes at most 255 characters.
const maxBucketLen = 255 - len("KV_")

// validBucket reports whether JetStream accepts a key-value bucket name:
// ^[a-zA-Z0-9_-]+$, as nats.go checks it, short enough for its stream.
func validBucket(name string) bool {
	return name != "" && len(name) <= maxBucketLen && events.EscapeToken(name) == name
}

// checkListenAddr checks the syntax of a TCP listen address, host:port
// (the host may be empty). Whether it can be listened on is known only when
// the daemon listens, before it connects anywhere.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port or :port")
	}
	if port == "" {
		return errors.New("the port is missing")
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("port %q: want a number up to 65535", port)
	}
	return nil
}

// checkNATSURL checks a NATS URL, or a comma-separated list of them, as
// nats.Connect reads it (a URL without a scheme is nats://), so that
// nats.Connect never fails on it: its errors quote the URL, secrets and all.
func checkNATSURL(raw string) error {
	var n int
	for _, s := range strings.Split(raw, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n++
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || u.Hostname() == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, u.Scheme) {
			return fmt.Errorf("nats-url %s: want nats://host:port, tls://, ws:// or wss://, comma-separated (or \"embedded\")", sensitive.RedactURL(raw))
		}
		if p := u.Port(); p != "" {
			if port, err := strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
				return fmt.Errorf("nats-url %s: port out of range", sensitive.RedactURL(raw))
			}
		}
	}
	if n == 0 {
		return errors.New(`nats-url: required (or "embedded")`)
	}
	return nil
}
