package main

import (
	"errors"
	"flag"
	"fmt"
	"github.com/capoller/capoller/publisher/events"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/publisher"
)

// config is the daemon's configuration. Each field is settable, from lowest
// to highest precedence, by a default, the YAML file (--config), the
// environment (CAPOLLER_<FLAG>, dashes as underscores) and a flag — except
// Accounts, which only the file lists.
//
// Without accounts, Regions and Sources are those of the default account,
// whose credentials are the SDK's default chain. With accounts, each
// account lists its own, and Regions and Sources are nil: setting them too
// is an error naming both, so that no flag silently widens or narrows what
// every account polls.
type config struct {
	Config          string          `yaml:"-"`
	Endpoint        string          `yaml:"endpoint"`
	Accounts        []accountConfig `yaml:"accounts,omitempty"`
	Regions         []string        `yaml:"regions,omitempty"`
	Sources         []string        `yaml:"sources,omitempty"`
	Interval        time.Duration   `yaml:"interval"`
	Initial         string          `yaml:"initial"`
	Strategy        string          `yaml:"strategy"`
	ResyncEvery     time.Duration   `yaml:"resync-every"`
	QPS             float64         `yaml:"qps"`
	ThrottleWindow  time.Duration   `yaml:"throttle-window"`
	PageSize        int             `yaml:"page-size"`
	APITimeout      time.Duration   `yaml:"api-timeout"`
	RedisURL        string          `yaml:"redis-url"`
	KeyPrefix       string          `yaml:"key-prefix"`
	NATSURL         string          `yaml:"nats-url"`
	Stream          string          `yaml:"stream"`
	SubjectPrefix   string          `yaml:"subject-prefix"`
	DuplicateWindow time.Duration   `yaml:"duplicate-window"`
	StreamMaxAge    time.Duration   `yaml:"stream-max-age"`
	StreamMaxBytes  int64           `yaml:"stream-max-bytes"`
	Checkpoint      string          `yaml:"checkpoint"`
	Bucket          string          `yaml:"bucket"`
	DataDir         string          `yaml:"data-dir"`
	MetricsAddr     string          `yaml:"metrics-addr"`
	PprofAddr       string          `yaml:"pprof-addr"`
	// InsecureEndpoint allows an http:// endpoint with STS credentials.
	InsecureEndpoint bool          `yaml:"insecure-endpoint"`
	LogFormat        string        `yaml:"log-format"`
	LogLevel         string        `yaml:"log-level"`
	ReplicaID        string        `yaml:"replica-id"`
	LeaseTTL         time.Duration `yaml:"lease-ttl"`
	StreamReplicas   int           `yaml:"stream-replicas"`
	HistoryMaxAge    time.Duration `yaml:"history-max-age"`
	HistoryMaxCount  int64         `yaml:"history-max-count"`
	// RedisReplicaWait and RedisReplicaGrace: see redisReplicaWait.
	RedisReplicaWait  time.Duration `yaml:"redis-replica-wait"`
	RedisReplicaGrace time.Duration `yaml:"redis-replica-grace"`
	// Output, OutputMaxBytes, OutputRedact and OutputRedactBuiltin say
	// which events carry their run's output, and how it is made safe to
	// publish (see cloudassist.OutputOptions).
	Output              string   `yaml:"output"`
	OutputMaxBytes      int      `yaml:"output-max-bytes"`
	OutputRedact        []string `yaml:"output-redact,omitempty"`
	OutputRedactBuiltin bool     `yaml:"output-redact-builtin"`
	// NATS and Redis say how to authenticate to the engines and check
	// their certificates.
	NATS  natsAuth  `yaml:",inline"`
	Redis redisAuth `yaml:",inline"`

	// Static credentials of the default account, set only by the demo
	// (see credential); otherwise the default account takes the SDK's
	// default chain (ALIBABA_CLOUD_* …).
	accessKeyID, accessKeySecret string
}

// accountConfig is one Alibaba Cloud account the daemon polls: its shards
// are every source in every region, ids name/source/region.
type accountConfig struct {
	// Name is the shard ids' first token: 1 to 64 characters of
	// [A-Za-z0-9_-], unique. "default" takes over the checkpoints of the
	// account that flags configured before accounts were listed.
	Name string `yaml:"name"`
	// Credentials says how the account signs its calls.
	Credentials credentialsConfig `yaml:"credentials"`
	// Regions to poll; at least one.
	Regions []string `yaml:"regions"`
	// Sources to poll in each region (ecs or ecs-results, and swas);
	// default ecs.
	Sources []string `yaml:"sources"`
}

// shardConfig is one shard the daemon polls: what run.go builds a lister
// and a poller from.
type shardConfig struct {
	// Shard is its id, account/source/region. ecs-results publishes as
	// source ecs: both are views of the same records.
	Shard diff.Shard
	// Source is the lister: ecs, ecs-results or swas.
	Source string
	// Account names the account, for credential.
	Account string
}

// shards lists the shards of the configuration, account by account (the
// default one alone when no accounts are listed), region by region. The
// same shard twice is an error.
func (c config) shards() ([]shardConfig, error) {
	accounts := c.Accounts
	if len(accounts) == 0 {
		accounts = []accountConfig{{Name: diff.DefaultAccount, Regions: c.Regions, Sources: c.Sources}}
	}
	var out []shardConfig
	seen := map[diff.Shard]string{}
	for _, a := range accounts {
		for _, region := range a.Regions {
			for _, source := range a.Sources {
				shard := shardOfSource(a.Name, source, region)
				if prev, dup := seen[shard]; dup {
					return nil, fmt.Errorf("shard %s is listed twice: account %q polls %s and %s in %s", shard, a.Name, prev, source, region)
				}
				seen[shard] = source
				out = append(out, shardConfig{Shard: shard, Source: source, Account: a.Name})
			}
		}
	}
	return out, nil
}

// accountNames lists the accounts polled: "default" alone when the file
// lists none.
func (c config) accountNames() []string {
	if len(c.Accounts) == 0 {
		return []string{diff.DefaultAccount}
	}
	names := make([]string, len(c.Accounts))
	for i, a := range c.Accounts {
		names[i] = a.Name
	}
	return names
}

// shardOfSource names the shard of a lister source of an account in a
// region. ecs and ecs-results are two views of the same records: both are
// source "ecs".
func shardOfSource(account, source, region string) diff.Shard {
	if source == "swas" {
		return diff.Shard{Account: account, Source: diff.SourceSWAS, Region: region}
	}
	return diff.Shard{Account: account, Source: diff.SourceECS, Region: region}
}

func defaultConfig() config {
	return config{
		Regions:             []string{"cn-hangzhou"},
		Sources:             []string{"ecs"},
		Interval:            30 * time.Second,
		Initial:             string(diff.InitialBaseline),
		Strategy:            string(cloudassist.StrategyIncremental),
		Output:              string(cloudassist.OutputFailures),
		OutputMaxBytes:      cloudassist.DefaultOutputMaxBytes,
		OutputRedactBuiltin: true,
		ResyncEvery:         10 * time.Minute,
		QPS:                 10,
		ThrottleWindow:      time.Minute,
		PageSize:            50,
		APITimeout:          15 * time.Second,
		RedisURL:            "redis://127.0.0.1:6379/0",
		KeyPrefix:           "capoller:",
		NATSURL:             "nats://127.0.0.1:4222",
		Stream:              "CAPOLLER",
		SubjectPrefix:       "capoller",
		DuplicateWindow:     10 * time.Minute,
		Checkpoint:          "redis",
		Bucket:              "CAPOLLER_CHECKPOINTS",
		DataDir:             "capoller-data",
		LogFormat:           "json",
		LogLevel:            "info",
		LeaseTTL:            15 * time.Second,
		StreamReplicas:      1,
		HistoryMaxAge:       30 * 24 * time.Hour,
		HistoryMaxCount:     1_000_000,
		// See checkpoint.RedisOptions.
		RedisReplicaWait:  time.Second,
		RedisReplicaGrace: 15 * time.Second,
	}
}

// longestRetryPause is the longest a shard waits before it re-publishes a
// batch whose checkpoint failed: the poller's default MaxBackoff and
// PermanentRetry. A duplicate window shorter than that lets an ordinary
// outage store the same event twice.
const longestRetryPause = 5 * time.Minute

// setting binds one flag name to a config field.
type setting struct {
	name, usage string
	set         func(c *config, v string) error
}

// booleanSettings take no value on the command line: --name is
// --name=true.
func booleanSetting(name string) bool {
	return name == "insecure-endpoint" || name == "output-redact-builtin"
}

// repeatableSetting may be given several times on the command line, each
// adding a value (its environment variable takes one per line).
func repeatableSetting(name string) bool { return name == "output-redact" }

func str(field func(*config) *string) func(*config, string) error {
	return func(c *config, v string) error { *field(c) = v; return nil }
}

func list(field func(*config) *[]string) func(*config, string) error {
	return func(c *config, v string) error {
		var out []string
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		*field(c) = out
		return nil
	}
}

func dur(field func(*config) *time.Duration) func(*config, string) error {
	return func(c *config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		*field(c) = d
		return nil
	}
}

func settings() []setting {
	return slices.Concat([]setting{
		{"endpoint", "Cloud Assistant API base URL, e.g. http://127.0.0.1:8080 for casim; empty means Alibaba's endpoints over HTTPS", str(func(c *config) *string { return &c.Endpoint })},
		{"insecure-endpoint", "allow an http:// --endpoint with STS credentials (sts, ram_role_arn, ecs_ram_role), whose token it sends in the clear: for a local emulator only", func(c *config, v string) error {
			b, err := strconv.ParseBool(v)
			c.InsecureEndpoint = b
			return err
		}},
		{"regions", "comma-separated regions to watch", list(func(c *config) *[]string { return &c.Regions })},
		{"sources", "comma-separated sources: ecs (DescribeInvocations), ecs-results (DescribeInvocationResults) — one of the two — and swas", list(func(c *config) *[]string { return &c.Sources })},
		{"interval", "time between the starts of two polls of a shard", dur(func(c *config) *time.Duration { return &c.Interval })},
		{"initial", "first-start policy: baseline (record the present silently) or emit", str(func(c *config) *string { return &c.Initial })},
		{"strategy", "how the ecs source reads the API: incremental (active, new and just-finished invocations, with a periodic full resync) or full", str(func(c *config) *string { return &c.Strategy })},
		{"resync-every", "how often the incremental strategy lists everything", dur(func(c *config) *time.Duration { return &c.ResyncEvery })},
		{"output", "which instance events carry their run's output: failures (every terminal status but Success), terminal or none", str(func(c *config) *string { return &c.Output })},
		{"output-max-bytes", "most bytes of output an event carries: its end is kept, where errors are printed", func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			c.OutputMaxBytes = n
			return err
		}},
		{"output-redact", "a regular expression (RE2) whose matches in the output are replaced by [REDACTED] before it is stored or published; give it once per pattern (the environment variable takes one per line, the YAML a list)", func(c *config, v string) error {
			c.OutputRedact = strings.Split(v, "\n")
			return nil
		}},
		{"output-redact-builtin", "also redact what the built-in patterns catch: AccessKey IDs and secrets, STS tokens, PEM private keys, password= and token= values", func(c *config, v string) error {
			b, err := strconv.ParseBool(v)
			c.OutputRedactBuiltin = b
			return err
		}},
		{"qps", "most API calls per second, per API, account and region, shared by the replicas of a group (keep it under the account's quota)", func(c *config, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			c.QPS = f
			return err
		}},
		{"throttle-window", "the API's throttling window: a throttled call retries after its next boundary", dur(func(c *config) *time.Duration { return &c.ThrottleWindow })},
		{"page-size", "MaxResults per API page, 1..50", func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			c.PageSize = n
			return err
		}},
		{"api-timeout", "timeout of one API call", dur(func(c *config) *time.Duration { return &c.APITimeout })},
		{"redis-url", "Redis URL for --checkpoint redis", str(func(c *config) *string { return &c.RedisURL })},
		{"key-prefix", "prefix of every Redis key", str(func(c *config) *string { return &c.KeyPrefix })},
		{"redis-replica-wait", "how long a lease, staged batch or commit waits, once Redis ran it, for every replica of its master to have it (WAIT), at most a tenth of lease-ttl; one they do not all acknowledge fails and is retried, so a failover cannot lose it. A master without replicas is not waited for; 0 never waits (a failover may then lose writes Redis acknowledged)", dur(func(c *config) *time.Duration { return &c.RedisReplicaWait })},
		{"redis-replica-grace", "how long a replica that left its master (killed, cut off, resyncing) is still waited for, holding that master's writes up: it may be the one promoted. At least the engine's failure detection (cluster-node-timeout, Sentinel's down-after-milliseconds); 0 waits only for the replicas online at each write", dur(func(c *config) *time.Duration { return &c.RedisReplicaGrace })},
		{"nats-url", `NATS URL, or "embedded" to run a NATS server with JetStream in process (data under --data-dir)`, str(func(c *config) *string { return &c.NATSURL })},
		{"stream", "JetStream stream name", str(func(c *config) *string { return &c.Stream })},
		{"subject-prefix", "first token(s) of every event subject", str(func(c *config) *string { return &c.SubjectPrefix })},
		{"duplicate-window", "JetStream duplicate window of the stream", dur(func(c *config) *time.Duration { return &c.DuplicateWindow })},
		{"stream-max-age", "how long the stream keeps an event when capoller creates it (or capoller setup sets it); 0 keeps any age", dur(func(c *config) *time.Duration { return &c.StreamMaxAge })},
		{"stream-max-bytes", "how many bytes the stream keeps, the oldest events going first, when capoller creates it (or capoller setup sets it); 0 keeps any size", func(c *config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			c.StreamMaxBytes = n
			return err
		}},
		{"checkpoint", "checkpoint store: redis or natskv", str(func(c *config) *string { return &c.Checkpoint })},
		{"bucket", "key-value bucket for --checkpoint natskv", str(func(c *config) *string { return &c.Bucket })},
		{"data-dir", "directory for the embedded NATS server's data", str(func(c *config) *string { return &c.DataDir })},
		{"metrics-addr", "address to serve /metrics, /healthz and /readyz on; empty disables", str(func(c *config) *string { return &c.MetricsAddr })},
		{"pprof-addr", "address to serve the Go profiler (/debug/pprof/) on; empty disables, a bare :port binds to localhost", str(func(c *config) *string { return &c.PprofAddr })},
		{"log-format", "json or console", str(func(c *config) *string { return &c.LogFormat })},
		{"log-level", "debug, info, warn or error", str(func(c *config) *string { return &c.LogLevel })},
		{"replica-id", "this replica's name in its group (replicas sharing a store and key prefix or bucket), default the host name; each process adds a random suffix", str(func(c *config) *string { return &c.ReplicaID })},
		{"lease-ttl", "how long a shard's lease lasts unrenewed: a replica that dies loses its shards to the others within about this long", dur(func(c *config) *time.Duration { return &c.LeaseTTL })},
		{"history-max-age", "how long a shard's audit history keeps a commit; 0 keeps any age", dur(func(c *config) *time.Duration { return &c.HistoryMaxAge })},
		{"history-max-count", "how many transitions a shard's audit history keeps at least, the oldest commits going first; 0 keeps any number", func(c *config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			c.HistoryMaxCount = n
			return err
		}},
		{"stream-replicas", "replicas of the stream (and of the KV bucket) when capoller creates them: 3 in a NATS cluster", func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			c.StreamReplicas = n
			return err
		}},
	}, natsAuthSettings(), redisAuthSettings())
}

func envName(flagName string) string {
	return "CAPOLLER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// loadConfig layers defaults, the YAML file, the environment and the flags.
func loadConfig(fs *flag.FlagSet, args []string, getenv func(string) string) (config, error) {
	cfg := defaultConfig()
	flags := map[string]string{}
	var order []string
	all := settings()
	defaults := settingDefaults(cfg)
	for _, s := range all {
		usage := s.usage + " (env " + envName(s.name) + ")"
		if d := defaults[s.name]; d != "" {
			usage = s.usage + " (default " + d + ", env " + envName(s.name) + ")"
		}
		record := func(v string) error {
			if prev, again := flags[s.name]; again && repeatableSetting(s.name) {
				flags[s.name] = prev + "\n" + v
				return nil
			}
			flags[s.name] = v
			order = append(order, s.name)
			return nil
		}
		if booleanSetting(s.name) {
			fs.BoolFunc(s.name, usage, record) // --name alone is true
		} else {
			fs.Func(s.name, usage, record)
		}
	}
	fs.StringVar(&cfg.Config, "config", getenv("CAPOLLER_CONFIG"), "YAML configuration file (env CAPOLLER_CONFIG)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	// Where regions and sources were set, if anywhere: with accounts they
	// are each account's, and setting them for all is refused.
	from := map[string]string{}
	if cfg.Config != "" {
		raw, err := os.ReadFile(cfg.Config)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(raw)))
		dec.KnownFields(true)
		path := cfg.Config
		defaults := cfg
		cfg.Regions, cfg.Sources = nil, nil
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
			return cfg, fmt.Errorf("config %s: %w", path, yamlError(err))
		}
		cfg.Config = path
		if cfg.Regions == nil {
			cfg.Regions = defaults.Regions
		} else {
			from["regions"] = "regions in " + path
		}
		if cfg.Sources == nil {
			cfg.Sources = defaults.Sources
		} else {
			from["sources"] = "sources in " + path
		}
		for i := range cfg.Accounts {
			if len(cfg.Accounts[i].Sources) == 0 {
				cfg.Accounts[i].Sources = []string{"ecs"}
			}
		}
	}
	for _, s := range all {
		if v := getenv(envName(s.name)); v != "" {
			if err := s.set(&cfg, v); err != nil {
				return cfg, fmt.Errorf("%s=%q: %w", envName(s.name), v, err)
			}
			from[s.name] = envName(s.name)
		}
	}
	for _, name := range order {
		i := slices.IndexFunc(all, func(s setting) bool { return s.name == name })
		if err := all[i].set(&cfg, flags[name]); err != nil {
			return cfg, fmt.Errorf("--%s=%q: %w", name, flags[name], err)
		}
		from[name] = "--" + name
	}
	if len(cfg.Accounts) > 0 {
		var errs []error
		for _, name := range []string{"regions", "sources"} {
			if where, set := from[name]; set {
				errs = append(errs, fmt.Errorf("%s and accounts in %s: with accounts, each account lists its own %s (accounts[].%s); remove %s",
					where, cfg.Config, name, name, where))
			}
		}
		if len(errs) > 0 {
			return cfg, errors.Join(errs...)
		}
		cfg.Regions, cfg.Sources = nil, nil // they are the default account's, which is not polled
	}
	if err := cfg.validate(); err != nil {
		return cfg, err
	}
	return cfg, cfg.checkDefaultChainEndpoint(getenv)
}

// checkDefaultChainEndpoint refuses an http:// endpoint for the default
// account (no accounts listed, no static keys) when the SDK's default
// credential chain may sign with an STS token, which plain http sends in
// the clear: unless the environment holds an access key pair without a
// token (the chain's first step, which then wins), the chain goes on to
// profiles, OIDC and the instance's RAM role, all STS.
func (c config) checkDefaultChainEndpoint(getenv func(string) string) error {
	if c.InsecureEndpoint || len(c.Accounts) > 0 || c.accessKeyID != "" || !strings.HasPrefix(strings.ToLower(c.Endpoint), "http://") {
		return nil
	}
	if getenv("ALIBABA_CLOUD_ACCESS_KEY_ID") != "" && getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET") != "" && getenv("ALIBABA_CLOUD_SECURITY_TOKEN") == "" {
		return nil
	}
	return fmt.Errorf("endpoint %s: plain http would send the default credential chain's STS security token in the clear "+
		"(ALIBABA_CLOUD_SECURITY_TOKEN, a profile, OIDC or the instance's RAM role); use https, or --insecure-endpoint for a local emulator",
		redactURL(c.Endpoint))
}

// yamlError rewrites yaml.v3's decoding errors for an operator: an unknown
// key is `unknown setting "foo"`, and no Go type names are shown.
func yamlError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err // a syntax error, e.g. "yaml: line 3: did not find expected key"
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = yamlMessage(m)
	}
	return errors.New(strings.Join(msgs, "; "))
}

// yamlMessage rewrites one message of a yaml.TypeError, e.g.
// "line 1: field foo not found in type main.config".
func yamlMessage(m string) string {
	if line, rest, ok := strings.Cut(m, ": field "); ok {
		if name, _, ok := strings.Cut(rest, " not found in type "); ok {
			return fmt.Sprintf("%s: unknown setting %q", line, name)
		}
	}
	// yaml.v3 quotes the start of the value ("!!str `hunter2...`"): it may
	// be a secret in the wrong place, so it is never shown.
	if i := strings.IndexByte(m, '`'); i >= 0 {
		if j := strings.IndexByte(m[i+1:], '`'); j >= 0 {
			m = m[:i] + "value" + m[i+1+j+1:]
		}
	}
	return withoutGoTypes(strings.NewReplacer(
		" into main.config", " into the settings (want a mapping of setting: value)",
		" into []main.accountConfig", " into a list of accounts",
		" into main.accountConfig", " into an account (want a mapping of setting: value)",
		" into main.credentialsConfig", " into credentials (want a mapping of setting: value)",
		" into time.Duration", " into a duration (e.g. 30s)",
		" into []string", " into a list",
		" into float64", " into a number",
		" into int", " into an integer",
		" into string", " into a string",
	).Replace(m))
}

// withoutGoTypes names a Go type still left after " into " (one of
// another package's configuration) "a setting".
func withoutGoTypes(m string) string {
	i := strings.LastIndex(m, " into ")
	if i < 0 {
		return m
	}
	rest := m[i+len(" into "):]
	end := strings.IndexAny(rest, " ,;")
	if end < 0 {
		end = len(rest)
	}
	if !strings.Contains(rest[:end], ".") {
		return m
	}
	return m[:i] + " into a setting" + rest[end:]
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

func (c config) validate() error {
	var errs []error
	for _, s := range []struct{ name, value string }{
		{"endpoint", c.Endpoint}, {"initial", c.Initial}, {"strategy", c.Strategy}, {"redis-url", c.RedisURL},
		{"key-prefix", c.KeyPrefix}, {"nats-url", c.NATSURL}, {"stream", c.Stream}, {"subject-prefix", c.SubjectPrefix},
		{"checkpoint", c.Checkpoint}, {"bucket", c.Bucket}, {"data-dir", c.DataDir}, {"metrics-addr", c.MetricsAddr},
		{"pprof-addr", c.PprofAddr}, {"log-format", c.LogFormat}, {"log-level", c.LogLevel}, {"replica-id", c.ReplicaID},
		{"nats-creds", c.NATS.Creds}, {"nats-nkey", c.NATS.Nkey}, {"nats-token", c.NATS.Token}, {"nats-token-file", c.NATS.TokenFile},
		{"nats-user", c.NATS.User}, {"nats-password", c.NATS.Password}, {"nats-password-file", c.NATS.PasswordFile},
		{"nats-ca", c.NATS.CA}, {"nats-cert", c.NATS.Cert}, {"nats-key", c.NATS.Key},
		{"redis-username", c.Redis.Username}, {"redis-password", c.Redis.Password}, {"redis-password-file", c.Redis.PasswordFile},
		{"redis-ca", c.Redis.CA}, {"redis-cert", c.Redis.Cert}, {"redis-key", c.Redis.Key},
	} {
		if err := printable(s.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err)) // not the value: it may be a URL with a password
		}
	}
	if c.Endpoint != "" {
		if u, err := url.Parse(c.Endpoint); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			errs = append(errs, fmt.Errorf("endpoint %s: want an http(s) URL", redactURL(c.Endpoint)))
		} else if u.Scheme == "http" && !c.InsecureEndpoint {
			for _, a := range c.Accounts {
				switch a.Credentials.Type {
				case credSTS, credRAMRoleARN, credECSRAMRole:
					errs = append(errs, fmt.Errorf("endpoint %s: plain http would send account %q's STS security token in the clear; use https, or --insecure-endpoint for a local emulator",
						redactURL(c.Endpoint), a.Name))
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
	switch c.Checkpoint {
	case "redis":
		if err := checkRedisURL(c.RedisURL, c.Redis); err != nil {
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
		errs = append(errs, c.NATS.check(c.NATSURL)...)
	} else if c.NATS.set() {
		errs = append(errs, errors.New("nats-creds, nats-nkey, nats-token, nats-user, nats-ca and nats-cert: not with nats-url embedded, whose in-process server has neither TLS nor authentication"))
	}
	if publisher.ValidStreamName(c.Stream) != nil {
		errs = append(errs, fmt.Errorf("stream %q: want 1 to 255 characters of [A-Za-z0-9_-] (JetStream refuses whitespace, \".\", \"*\", \">\" and path separators)", c.Stream))
	}
	if !validBucket(c.Bucket) {
		errs = append(errs, fmt.Errorf("bucket %q: want 1 to %d characters of [A-Za-z0-9_-] (its stream is KV_<bucket>)", c.Bucket, maxBucketLen))
	}
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
	switch c.LogFormat {
	case "json", "console":
	default:
		errs = append(errs, fmt.Errorf("log-format %q: want json or console", c.LogFormat))
	}
	return errors.Join(errs...)
}

// checkShards checks the regions and sources of one account; label
// prefixes each error with the account, or nothing for the default one.
func checkShards(label string, regions, sources []string) []error {
	var errs []error
	if len(regions) == 0 {
		errs = append(errs, fmt.Errorf("%sregions: at least one region is required", label))
	}
	for i, r := range regions {
		if !validRegion(r) {
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
		for _, err := range a.Credentials.validate() {
			errs = append(errs, fmt.Errorf("%scredentials: %w", label, err))
		}
	}
	return errs
}

// validAccountName reports whether name can name an account: 1 to 64
// characters of [A-Za-z0-9_-], a token of shard ids and subjects.
func validAccountName(name string) bool {
	return name != "" && len(name) <= 64 && events.EscapeToken(name) == name
}

// validRegion reports whether r looks like an Alibaba Cloud region id:
// lower-case letters, digits and "-".
func validRegion(r string) bool {
	return r != "" && strings.Trim(r, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
}

// printable refuses a setting with a control character, an invisible one
// (a line or paragraph separator…) or invalid UTF-8: no setting needs one,
// and YAML does not carry some of them through a re-marshal.
func printable(v string) error {
	if !utf8.ValidString(v) {
		return errors.New("not valid UTF-8")
	}
	for i, r := range v {
		if r != ' ' && !unicode.IsPrint(r) {
			return fmt.Errorf("control or invisible character %U at byte %d", r, i)
		}
	}
	return nil
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

// configError is a configuration the daemon found it cannot use only as it
// started (e.g. a metrics address already in use): exit code 2, like the
// errors of loadConfig.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

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
			return fmt.Errorf("nats-url %s: want nats://host:port, tls://, ws:// or wss://, comma-separated (or \"embedded\")", redactURL(raw))
		}
		if p := u.Port(); p != "" {
			if port, err := strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
				return fmt.Errorf("nats-url %s: port out of range", redactURL(raw))
			}
		}
	}
	if n == 0 {
		return errors.New(`nats-url: required (or "embedded")`)
	}
	return nil
}

// redacted returns c fit to show: its URLs redacted as redactURL does,
// and the secrets set inline (a NATS token or password, a Redis password)
// REDACTED. Files that hold secrets are named, never read.
func (c config) redacted() config {
	c.RedisURL, c.NATSURL, c.Endpoint = redactURL(c.RedisURL), redactURL(c.NATSURL), redactURL(c.Endpoint)
	for _, s := range []*string{&c.NATS.Token, &c.NATS.Password, &c.Redis.Password} {
		if *s != "" {
			*s = "REDACTED"
		}
	}
	return c
}

// redactURL returns raw fit for a log line or an error message: user
// information (a user, a password, or a NATS token) becomes REDACTED, as do
// the values of query parameters named like credentials. Each URL of a
// comma-separated list (NATS takes one) is redacted on its own. A URL that
// does not parse is redacted textually; it is never echoed as it is.
func redactURL(raw string) string {
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
// (or the start) and the last "@" becomes REDACTED, and so does a port that
// is not a number (the password of "user:pass" that lost its "@").
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

// withoutURL returns err, unless it is a URL parse error, which quotes the
// whole URL (credentials included): then only that the URL is invalid.
func withoutURL(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return errors.New("not a valid URL")
	}
	return err
}

// historyLimit is a history limit as the stores take it: 0 in the
// configuration (no limit) is their negative.
func historyLimit[T time.Duration | int64](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

// settingDefaults renders each setting's value in c, by its YAML name (the
// flag's), for --help: durations as 30s, lists comma-separated, empty
// values left out.
func settingDefaults(c config) map[string]string {
	out := map[string]string{}
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !v.Type().Field(i).IsExported() {
			continue
		}
		switch f := v.Field(i).Interface().(type) {
		case time.Duration:
			if f != 0 {
				out[name] = f.String()
			}
		case []string:
			out[name] = strings.Join(f, ",")
		case string:
			out[name] = f
		case int, int64, float64:
			out[name] = fmt.Sprint(f)
		}
	}
	return out
}
