package main

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// setting binds one flag name to a config field.
type setting struct {
	name, usage string
	set         func(c *config, v string) error
}

// booleanSetting reports a setting that takes no value on the command line: --name is
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
		{"regions", "comma-separated regions to watch", list(func(c *config) *[]string { return (*[]string)(&c.Regions) })},
		{"sources", "comma-separated sources: ecs (DescribeInvocations), ecs-results (DescribeInvocationResults) — one of the two — and swas", list(func(c *config) *[]string { return (*[]string)(&c.Sources) })},
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
		{"log-summary-every", "how often each shard logs one info line of its cycles, transitions, API calls, errors and detection lag p99 (0: never)", dur(func(c *config) *time.Duration { return &c.LogSummaryEvery })},
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
	}, natsAuthSettings(), redisAuthSettings(), hintsSettings())
}

// hintsSettings are the settings of the hints endpoint (YAML hints:).
func hintsSettings() []setting {
	return []setting{
		{"hints-listen", "address of the endpoint EventBridge pushes Cloud Assistant's TaskCompleted events to (POST /v1/hints/cloudassist): each is a reason to look the invocation up now; empty: off", str(func(c *config) *string { return &c.Hints.Listen })},
		{"hints-token", "the token a push must carry (Bearer, or Basic's password): set it in the environment, or use hints-token-file", str(func(c *config) *string { return &c.Hints.Token })},
		{"hints-token-file", "file holding the hints' token, read again when it changes", str(func(c *config) *string { return &c.Hints.TokenFile })},
		{"hints-tls-cert", "PEM certificate the hints endpoint serves TLS with, with hints-tls-key", str(func(c *config) *string { return &c.Hints.TLSCert })},
		{"hints-tls-key", "PEM private key of hints-tls-cert", str(func(c *config) *string { return &c.Hints.TLSKey })},
		{"hints-uid", "the default account's Alibaba Cloud uid (without accounts): hints for another uid are refused", str(func(c *config) *string { return &c.Hints.UID })},
	}
}

func envName(flagName string) string {
	return "CAPOLLER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
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
		case listSetting:
			out[name] = strings.Join(f, ",")
		case string:
			out[name] = f
		case int, int64, float64:
			out[name] = fmt.Sprint(f)
		}
	}
	return out
}
