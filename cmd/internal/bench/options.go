package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/sensitive"
	"github.com/capoller/capoller/publisher"
)

// Options configures a bench run; the CLI's flags set them.
type Options struct {
	// Records are the emulator's invocations (each on one instance), Active
	// the fraction still running at the start, finishing over ActiveFor.
	Records   int
	Active    float64
	ActiveFor time.Duration
	// QPS is the daemon's --qps (the emulator's quota is a tenth above it,
	// per Window; 0: no quota); Window its --throttle-window.
	QPS      float64
	Window   time.Duration
	Interval time.Duration
	// Cycles are the steady-state cycles measured per strategy.
	Cycles     int
	Strategies []string
	Behaviours []Behaviour
	// Arrivals are new invocations per second while measuring; Throttle
	// and Errors the fractions of calls throttled and failed with a 5xx.
	Arrivals  float64
	Throttle  float64
	Errors    float64
	Instances int
	// Burst is how many invocations change at once in the throughput
	// phase (0: no throughput phase).
	Burst int
	// RedisURL is one Redis server; NATSURL a NATS server, or "embedded".
	RedisURL string
	NATSURL  string
	// Replicas > 0 runs a group of that many replicas sharing Shards
	// shards (with LeaseTTL, measured for Steady), instead of the
	// strategies.
	Replicas int
	Shards   int
	LeaseTTL time.Duration
	Steady   time.Duration

	// Tracing has the pipeline export spans, and each strategy's daemon
	// (OTEL_EXPORTER_OTLP_ENDPOINT), over OTLP/HTTP to a collector in
	// process that discards them.
	Tracing bool

	// Hints has each strategy's daemon take the emulator's EventBridge
	// pushes as hints (--hints-listen), and the report time its terminal
	// instance events and count its API calls per minute.
	Hints bool

	// Executable is the capoller binary the replicas run.
	Executable string
	// Progress takes the progress lines and the replicas' logs.
	Progress io.Writer
	// PollerPublisher adapts the publisher to the poller, as the daemon
	// does, for the throughput phase.
	PollerPublisher func(*publisher.NATS) poller.Publisher
}

// Validate refuses options the bench cannot run with.
func (o Options) Validate() error {
	for _, s := range o.Strategies {
		if s != "full" && s != "incremental" {
			return fmt.Errorf("strategy %q: want full or incremental", s)
		}
	}
	if o.Records < 1 || o.Active < 0 || o.Active > 1 || o.Cycles < 1 || o.Interval <= 0 || o.Window <= 0 || o.QPS < 0 {
		return errors.New("records, cycles, interval and throttle-window must be positive, qps not negative, active within 0..1")
	}
	return nil
}

// Behaviour is an emulator behaviour the strategies run under, named.
type Behaviour struct {
	Name string
	castest.Behaviour
}

// ParseBehaviours reads --behaviours: "ideal" (today's ideal API),
// "worst" (unordered and unstable ties, drifting tokens, strict filters),
// or a JSON castest.Behaviour; comma-separated outside JSON.
func ParseBehaviours(v string) ([]Behaviour, error) {
	if strings.HasPrefix(strings.TrimSpace(v), "{") {
		var b castest.Behaviour
		if err := json.Unmarshal([]byte(v), &b); err != nil {
			return nil, fmt.Errorf("behaviours: %w", err)
		}
		if err := b.Validate(); err != nil {
			return nil, fmt.Errorf("behaviours: %w", err)
		}
		return []Behaviour{{b.String(), b}}, nil
	}
	var out []Behaviour
	for _, name := range strings.Split(v, ",") {
		switch name = strings.TrimSpace(name); name {
		case "ideal":
			out = append(out, Behaviour{name, castest.Behaviour{}})
		case "worst":
			out = append(out, Behaviour{name, castest.Behaviour{Ties: true, Unstable: true, Drift: true, StrictFilters: true}})
		default:
			return nil, fmt.Errorf("behaviours: %q: want ideal, worst or a JSON behaviour", name)
		}
	}
	return out, nil
}

// redact hides a URL's credentials: they never reach an error.
func (o Options) redact(url string) string { return sensitive.RedactURL(url) }
