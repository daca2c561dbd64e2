package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/capoller/capoller/checkpoint"
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
	Regions         listSetting     `yaml:"regions,omitempty"`
	Sources         listSetting     `yaml:"sources,omitempty"`
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
	LogSummaryEvery  time.Duration `yaml:"log-summary-every"`
	Hints            hintsConfig   `yaml:"hints,omitempty"`
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
	Output              string      `yaml:"output"`
	OutputMaxBytes      int         `yaml:"output-max-bytes"`
	OutputRedact        patternList `yaml:"output-redact,omitempty"`
	OutputRedactBuiltin bool        `yaml:"output-redact-builtin"`
	// NATS and Redis say how to authenticate to the engines and check
	// their certificates.
	NATS  publisher.NATSAuth   `yaml:",inline"`
	Redis checkpoint.RedisAuth `yaml:",inline"`

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
	Credentials cloudassist.Credentials `yaml:"credentials"`
	// Regions to poll; at least one.
	Regions listSetting `yaml:"regions"`
	// Sources to poll in each region (ecs or ecs-results, and swas);
	// default ecs.
	Sources listSetting `yaml:"sources"`
	// UID is the account's Alibaba Cloud uid (its numeric id): a hint
	// pushed for it is this account's, and one for a uid no account names
	// is refused.
	UID string `yaml:"uid,omitempty"`
}

// hintsConfig is the endpoint EventBridge pushes TaskCompleted events to
// (YAML hints: {listen, token-file, tls-cert, tls-key, uid}); off unless
// listen is set.
type hintsConfig struct {
	Listen    string `yaml:"listen,omitempty"`
	Token     string `yaml:"token,omitempty"` // CAPOLLER_HINTS_TOKEN; never logged
	TokenFile string `yaml:"token-file,omitempty"`
	TLSCert   string `yaml:"tls-cert,omitempty"`
	TLSKey    string `yaml:"tls-key,omitempty"`
	// UID is the default account's uid, when no accounts are listed.
	UID string `yaml:"uid,omitempty"`
}

// shardConfig is one shard the daemon polls: what listers.go builds a lister
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
		LogSummaryEvery:     10 * time.Minute,
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

// loadConfig layers defaults, the YAML file, the environment and the flags,
// declaring every setting on fs: run's flags.
func loadConfig(fs *flag.FlagSet, args []string, getenv func(string) string) (config, error) {
	cf := bindConfig(fs, getenv, allGroups()...)
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return cf.load()
}

// configFlags are the settings a subcommand declared on its flag set,
// until its flags are parsed.
type configFlags struct {
	cfg    config
	given  *flagsGiven
	getenv func(string) string
	api    bool // the command calls the API: its credentials are checked
}

// bindConfig declares on fs the settings of groups, and --config.
func bindConfig(fs *flag.FlagSet, getenv func(string) string, groups ...settingGroup) *configFlags {
	cf := &configFlags{cfg: defaultConfig(), getenv: getenv, api: slices.Contains(groups, groupAPI)}
	var declared []setting
	for _, s := range settings() {
		if slices.Contains(groups, groupOf(s.name)) {
			declared = append(declared, s)
		}
	}
	cf.given = bindFlags(fs, declared, settingDefaults(cf.cfg))
	fs.StringVar(&cf.cfg.Config, "config", getenv("CAPOLLER_CONFIG"), "YAML configuration file (env CAPOLLER_CONFIG)")
	return cf
}

// load layers the defaults, the YAML file, the environment (every
// setting's: one environment serves every subcommand) and the flags
// parsed, and validates the result.
func (cf *configFlags) load() (config, error) {
	cfg, getenv, all := cf.cfg, cf.getenv, settings()
	// Where regions and sources were set, if anywhere: with accounts they
	// are each account's, and setting them for all is refused.
	from := map[string]string{}
	if err := cfg.readFile(from); err != nil {
		return cfg, err
	}
	for _, s := range all {
		if v := getenv(envName(s.name)); v != "" {
			if err := s.set(&cfg, v); err != nil {
				return cfg, fmt.Errorf("%s=%q: %w", envName(s.name), v, err)
			}
			from[s.name] = envName(s.name)
		}
	}
	for _, name := range cf.given.order {
		i := slices.IndexFunc(all, func(s setting) bool { return s.name == name })
		if err := all[i].set(&cfg, cf.given.values[name]); err != nil {
			return cfg, fmt.Errorf("--%s=%q: %w", name, cf.given.values[name], err)
		}
		from[name] = "--" + name
	}
	if err := cfg.accountsOwnTheirShards(from); err != nil {
		return cfg, err
	}
	if err := cfg.validate(); err != nil {
		return cfg, err
	}
	if !cf.api {
		return cfg, nil
	}
	return cfg, cfg.checkDefaultChainEndpoint(getenv)
}

// flagsGiven holds the settings given on the command line, in their order,
// until the file and the environment beneath them have been read.
type flagsGiven struct {
	values map[string]string
	order  []string
}

// bindFlags declares every setting on fs. A flag given twice keeps its
// last value, except a repeatable one, which keeps each on its own line.
func bindFlags(fs *flag.FlagSet, all []setting, defaults map[string]string) *flagsGiven {
	given := &flagsGiven{values: map[string]string{}}
	for _, s := range all {
		usage := s.usage + " (env " + envName(s.name) + ")"
		if d := defaults[s.name]; d != "" {
			usage = s.usage + " (default " + d + ", env " + envName(s.name) + ")"
		}
		record := func(v string) error {
			if prev, again := given.values[s.name]; again && repeatableSetting(s.name) {
				given.values[s.name] = prev + "\n" + v
				return nil
			}
			given.values[s.name] = v
			given.order = append(given.order, s.name)
			return nil
		}
		if booleanSetting(s.name) {
			fs.BoolFunc(s.name, usage, record) // --name alone is true
		} else {
			fs.Func(s.name, usage, record)
		}
	}
	return given
}

// readFile decodes the YAML file named by --config, if any, over the
// defaults, and notes in from whether it set regions or sources.
func (c *config) readFile(from map[string]string) error {
	if c.Config == "" {
		return nil
	}
	raw, err := os.ReadFile(c.Config)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	path := c.Config
	defaults := *c
	c.Regions, c.Sources = nil, nil
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return fmt.Errorf("config %s: %w", path, yamlError(err, raw, c))
	}
	c.Config = path
	if c.Regions == nil {
		c.Regions = defaults.Regions
	} else {
		from["regions"] = "regions in " + path
	}
	if c.Sources == nil {
		c.Sources = defaults.Sources
	} else {
		from["sources"] = "sources in " + path
	}
	for i := range c.Accounts {
		if len(c.Accounts[i].Sources) == 0 {
			c.Accounts[i].Sources = []string{"ecs"}
		}
	}
	return nil
}

// accountsOwnTheirShards refuses regions or sources set for all beside
// accounts, which each list their own, naming where they were set.
func (c *config) accountsOwnTheirShards(from map[string]string) error {
	if len(c.Accounts) == 0 {
		return nil
	}
	var errs []error
	for _, name := range []string{"regions", "sources"} {
		if where, set := from[name]; set {
			errs = append(errs, fmt.Errorf("%s and accounts in %s: with accounts, each account lists its own %s (accounts[].%s); remove %s",
				where, c.Config, name, name, where))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	c.Regions, c.Sources = nil, nil // they are the default account's, which is not polled
	return nil
}

// yamlError rewrites yaml.v3's decoding errors for an operator: an unknown
// key is `unknown setting "foo"`, and no Go type names are shown.
//
// raw, the file, names the key of each error's line: "line 3: regions:
// expected a list of strings, or one string".
//
// into is what the file was decoded into: an unknown key one or two
// letters from one of its type's ("intervall", "listn") is followed by
// "; did you mean interval?".
func yamlError(err error, raw []byte, into any) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err // a syntax error, e.g. "yaml: line 3: did not find expected key"
	}
	keys := map[string][]string{}
	yamlKeys(reflect.TypeOf(into), keys)
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = yamlMessage(m, keys)
	}
	var root yaml.Node
	if yaml.Unmarshal(raw, &root) == nil {
		for i, m := range msgs {
			msgs[i] = withKey(&root, m)
		}
	}
	return errors.New(strings.Join(msgs, "; "))
}

// withKey inserts, after a message's "line N: ", the key whose value is
// on that line: "line 3: accounts[0].regions: …". An unknown setting is
// named already; its place is added: `line 3: accounts[0]: unknown
// setting "qps"`.
func withKey(root *yaml.Node, msg string) string {
	var line int
	if _, err := fmt.Sscanf(msg, "line %d:", &line); err != nil {
		return msg
	}
	key := keyAt(root, line, "")
	prefix := fmt.Sprintf("line %d: ", line)
	rest := strings.TrimPrefix(msg, prefix)
	i := strings.LastIndexByte(key, '.')
	switch {
	case key == "":
		return msg
	case strings.HasPrefix(rest, "unknown setting "):
		if i < 0 {
			return msg
		}
		return prefix + key[:i] + ": " + rest
	}
	return prefix + key + ": " + rest
}

// keyAt is the path ("accounts[1].regions") of the shallowest key whose
// value starts on line, or "".
func keyAt(n *yaml.Node, line int, path string) string {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if k := keyAt(c, line, path); k != "" {
				return k
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k, v := n.Content[i], n.Content[i+1]; k.Line == line || v.Line == line {
				return join(path, n.Content[i].Value)
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := keyAt(n.Content[i+1], line, join(path, n.Content[i].Value)); k != "" {
				return k
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if k := keyAt(c, line, fmt.Sprintf("%s[%d]", path, i)); k != "" {
				return k
			}
		}
	}
	return ""
}

// join is path.key, or key at the top.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// listSetting is a list of strings in YAML: a sequence of them, or one
// string, comma-separated as the flag and the variable take it
// ("regions: cn-hangzhou" or "regions: cn-hangzhou,cn-beijing").
type listSetting []string

// UnmarshalYAML takes a sequence of scalars or one scalar. Its error is a
// yaml.TypeError, so that the decoder reports it with the file's others.
func (l *listSetting) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*l = nil
		for _, v := range strings.Split(n.Value, ",") {
			if v = strings.TrimSpace(v); v != "" {
				*l = append(*l, v)
			}
		}
		return nil
	case yaml.SequenceNode:
		list := make(listSetting, 0, len(n.Content))
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return notAList(n, c.Tag)
			}
			list = append(list, c.Value)
		}
		*l = list
		return nil
	}
	return notAList(n, n.Tag)
}

// patternList is a list of patterns in YAML: a sequence of them, or one.
// A comma is part of a pattern, never a separator.
type patternList []string

// UnmarshalYAML takes a sequence of scalars or one scalar.
func (l *patternList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = patternList{n.Value}
		return nil
	}
	var list listSetting
	if n.Kind != yaml.SequenceNode {
		return notAList(n, n.Tag)
	}
	if err := list.UnmarshalYAML(n); err != nil {
		return err
	}
	*l = patternList(list)
	return nil
}

func notAList(n *yaml.Node, tag string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: expected a list of strings, or one string (cannot unmarshal %s into a list)", n.Line, tag)}}
}

// yamlKeys adds to keys, by the name yaml.v3 gives each struct type in
// its errors ("main.config"), the keys that type takes, for t and the
// types it holds.
func yamlKeys(t reflect.Type, keys map[string][]string) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	if _, done := keys[t.String()]; done {
		return
	}
	keys[t.String()] = nil
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-":
			continue
		case strings.Contains(opts, "inline"):
			yamlKeys(f.Type, keys)
			keys[t.String()] = append(keys[t.String()], keys[f.Type.String()]...)
			continue
		case name == "":
			name = strings.ToLower(f.Name)
		}
		keys[t.String()] = append(keys[t.String()], name)
		yamlKeys(f.Type, keys)
	}
}

// yamlMessage rewrites one message of a yaml.TypeError, e.g.
// "line 1: field foo not found in type main.config"; keys are the keys of
// each type (see yamlKeys), for a suggestion.
func yamlMessage(m string, keys map[string][]string) string {
	if line, rest, ok := strings.Cut(m, ": field "); ok {
		if name, typ, ok := strings.Cut(rest, " not found in type "); ok {
			if n := renamed(name); n != "" {
				return fmt.Sprintf("%s: unknown setting %q: it was renamed %s", line, name, n)
			}
			if near := nearest(keys[typ], name); near != "" {
				return fmt.Sprintf("%s: unknown setting %q; did you mean %s?", line, name, near)
			}
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
		" into cloudassist.Credentials", " into credentials (want a mapping of setting: value)",
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

// configError is a configuration the daemon found it cannot use only as it
// started (e.g. a metrics address already in use): exit code 2, like the
// errors of loadConfig.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }

func (e configError) Unwrap() error { return e.err }

// historyLimit is a history limit as the stores take it: 0 in the
// configuration (no limit) is their negative.
func historyLimit[T time.Duration | int64](v T) T {
	if v == 0 {
		return -1
	}
	return v
}
