package notify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/publisher/events"
)

// Config is the notify YAML file: webhooks, the rules routing failures to
// them, and how events are grouped and held.
type Config struct {
	// GroupWindow is how long an invocation's instance events wait for
	// its final aggregate event before what is grouped is sent; default
	// 1m (about two poll intervals of a busy daemon).
	GroupWindow time.Duration `yaml:"group_window"`
	// Settle is how long a group waits after its final aggregate event
	// for instance events published in the same batch; default 2s.
	Settle time.Duration `yaml:"settle"`
	// AckWait is the consumer's ack wait; held events are kept alive with
	// InProgress every third of it. Default 30s.
	AckWait time.Duration `yaml:"ack_wait"`
	// MaxAckPending bounds the events held unacknowledged (grouped,
	// queued or being delivered); default 50,000, room for a minute of
	// 1,000 failing invocations on 30 instances each plus their
	// aggregates, held for the grouping window.
	MaxAckPending int `yaml:"max_ack_pending"`
	// Deliver is where a new durable consumer starts: "new" (default:
	// only events published from now on) or "all" (the whole stream). An
	// existing consumer keeps its position.
	Deliver  string          `yaml:"deliver"`
	Webhooks []WebhookConfig `yaml:"webhooks"`
	Rules    []RuleConfig    `yaml:"rules"`
}

// WebhookConfig is one chat webhook. Its URL and signing secret come from
// the environment or a file named here, never from the YAML itself
// (except a generic webhook's URL, which carries no token), and are
// never logged.
type WebhookConfig struct {
	Name string `yaml:"name"`
	// Kind is dingtalk, slack, feishu (Feishu or Lark) or generic.
	Kind string `yaml:"kind"`
	// URL is allowed for kind generic only; the others take the URL
	// from URLEnv or URLFile, since it holds the bot's token.
	URL        string `yaml:"url"`
	URLEnv     string `yaml:"url_env"`
	URLFile    string `yaml:"url_file"`
	SecretEnv  string `yaml:"secret_env"`
	SecretFile string `yaml:"secret_file"`
	// Limits are the sliding windows the webhook is kept under; default
	// by kind: DingTalk 20/1m, Slack 1/1s, Feishu 100/1m and 5/1s,
	// generic none.
	Limits []LimitConfig `yaml:"limits"`
	Retry  RetryConfig   `yaml:"retry"`
	// DigestItems bounds the invocations a digest lists one by one;
	// default 20. The rest are counted by command and status.
	DigestItems int `yaml:"digest_items"`
	// Blocks (Slack) adds a Block Kit section beside the text; Card
	// (Feishu) sends an interactive card instead of a text message.
	Blocks bool `yaml:"blocks"`
	Card   bool `yaml:"card"`
	// Timeout bounds one POST; default 10s.
	Timeout time.Duration `yaml:"timeout"`
}

// LimitConfig is one sliding window: at most Messages posts in any Per.
type LimitConfig struct {
	Messages int           `yaml:"messages"`
	Per      time.Duration `yaml:"per"`
}

// RetryConfig is the exponential backoff of a failed post (429, 5xx,
// network errors, a service's "too fast" codes).
type RetryConfig struct {
	// Initial interval, default 1s; MaxInterval, default 1m; MaxAttempts
	// including the first, default 8; MaxElapsed, default 10m. Whichever
	// runs out first ends the retries and the message is dead-lettered.
	Initial     time.Duration `yaml:"initial"`
	MaxInterval time.Duration `yaml:"max_interval"`
	MaxAttempts int           `yaml:"max_attempts"`
	MaxElapsed  time.Duration `yaml:"max_elapsed"`
}

// RuleConfig selects failures worth a message. Each list allows any of
// its values, an empty list allows everything.
type RuleConfig struct {
	Name     string   `yaml:"name"`
	Accounts []string `yaml:"accounts"`
	Sources  []string `yaml:"sources"`
	Regions  []string `yaml:"regions"`
	// Commands match a command's id or name.
	Commands []string `yaml:"commands"`
	// Statuses are the invocation outcomes worth a message; default
	// Failed, PartialFailed, Timeout.
	Statuses []string `yaml:"statuses"`
	// InstanceStatuses are the instance outcomes that count as failures
	// of their invocation (grouped into its message); default Failed,
	// Timeout, Error, Aborted, Invalid, Cancelled, Terminated.
	InstanceStatuses []string `yaml:"instance_statuses"`
	// Webhooks names where the rule's messages go; default every webhook.
	Webhooks []string `yaml:"webhooks"`
}

// DefaultStatuses are the invocation outcomes a rule sends a message
// for unless it lists its own.
func DefaultStatuses() []events.Status {
	return []events.Status{events.Failed, events.PartialFailed, events.Timeout}
}

// DefaultInstanceStatuses are the instance outcomes a rule counts as
// failures of their invocation unless it lists its own.
func DefaultInstanceStatuses() []events.Status {
	return []events.Status{events.Failed, events.Timeout, events.Error, events.Aborted, events.Invalid, events.Cancelled, events.Terminated}
}

// The webhook kinds.
const (
	KindDingTalk = "dingtalk"
	KindSlack    = "slack"
	KindFeishu   = "feishu"
	KindGeneric  = "generic"
)

// ParseConfig reads a notify YAML file. Unknown keys are errors naming
// the key. Secrets are resolved with getenv and readFile (os.Getenv and
// os.ReadFile when nil); an error names the variable or file, never its
// value.
func ParseConfig(raw []byte, getenv func(string) string, readFile func(string) ([]byte, error)) (*Settings, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if readFile == nil {
		readFile = os.ReadFile
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("notify config: %w", err)
	}
	return c.resolve(getenv, readFile)
}

// Settings is a checked configuration with its secrets resolved.
type Settings struct {
	GroupWindow   time.Duration
	Settle        time.Duration
	AckWait       time.Duration
	MaxAckPending int
	DeliverAll    bool
	Webhooks      []Webhook
	Rules         []Rule
}

// Webhook is a resolved webhook. Its URL and secret are never logged or
// printed: String names the webhook only.
type Webhook struct {
	Name, Kind  string
	url, secret string
	Limits      []LimitConfig
	Retry       RetryConfig
	DigestItems int
	Blocks      bool
	Card        bool
	Timeout     time.Duration
}

func (w Webhook) String() string { return w.Kind + " webhook " + w.Name }

// NewWebhook builds a webhook from code (tests, other programs) with
// the defaults of its kind.
func NewWebhook(c WebhookConfig, rawURL, secret string) (Webhook, error) {
	c.URL, c.URLEnv, c.URLFile, c.SecretEnv, c.SecretFile = "", "", "", "", ""
	w, err := c.build(rawURL, secret)
	if err != nil {
		return w, err
	}
	return w, nil
}

// Rule is a resolved rule.
type Rule struct {
	Name             string
	Filter           events.Filter
	Statuses         []events.Status
	InstanceStatuses []events.Status
	// Webhooks are indexes into Settings.Webhooks.
	Webhooks []int
}

func (c Config) resolve(getenv func(string) string, readFile func(string) ([]byte, error)) (*Settings, error) {
	s := &Settings{GroupWindow: c.GroupWindow, Settle: c.Settle, AckWait: c.AckWait, MaxAckPending: c.MaxAckPending}
	var errs []error
	if s.GroupWindow == 0 {
		s.GroupWindow = time.Minute
	}
	if s.Settle == 0 {
		s.Settle = 2 * time.Second
	}
	if s.AckWait == 0 {
		s.AckWait = 30 * time.Second
	}
	if s.MaxAckPending == 0 {
		s.MaxAckPending = 50_000
	}
	if s.GroupWindow < 0 || s.Settle < 0 || s.AckWait < time.Second || s.MaxAckPending < 0 {
		errs = append(errs, errors.New("group_window and settle must not be negative, ack_wait at least 1s, max_ack_pending not negative"))
	}
	switch c.Deliver {
	case "", "new":
	case "all":
		s.DeliverAll = true
	default:
		errs = append(errs, fmt.Errorf("deliver %q: want new or all", c.Deliver))
	}
	if len(c.Webhooks) == 0 {
		errs = append(errs, errors.New("webhooks: at least one is needed"))
	}
	names := map[string]int{}
	for i, wc := range c.Webhooks {
		w, err := wc.resolve(getenv, readFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("webhooks[%d] (%s): %w", i, wc.Name, err))
			continue
		}
		if _, dup := names[w.Name]; dup {
			errs = append(errs, fmt.Errorf("webhooks[%d]: the name %q is used twice", i, w.Name))
			continue
		}
		names[w.Name] = len(s.Webhooks)
		s.Webhooks = append(s.Webhooks, w)
	}
	rules := c.Rules
	if len(rules) == 0 {
		rules = []RuleConfig{{Name: "failures"}}
	}
	for i, rc := range rules {
		r, err := rc.resolve(names)
		if err != nil {
			errs = append(errs, fmt.Errorf("rules[%d] (%s): %w", i, rc.Name, err))
			continue
		}
		if r.Name == "" {
			r.Name = fmt.Sprintf("rule-%d", i+1)
		}
		s.Rules = append(s.Rules, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("notify config: %w", err)
	}
	return s, nil
}

func (wc WebhookConfig) resolve(getenv func(string) string, readFile func(string) ([]byte, error)) (Webhook, error) {
	secretOf := func(what, inline, env, file string) (string, error) {
		set := 0
		for _, v := range []string{inline, env, file} {
			if v != "" {
				set++
			}
		}
		switch {
		case set > 1:
			return "", fmt.Errorf("%s: give one of %s, %s_env and %s_file", what, what, what, what)
		case env != "":
			v := strings.TrimSpace(getenv(env))
			if v == "" {
				return "", fmt.Errorf("%s_env: the environment variable %s is empty or unset", what, env)
			}
			return v, nil
		case file != "":
			b, err := readFile(file)
			if err != nil {
				return "", fmt.Errorf("%s_file: %w", what, err)
			}
			v := strings.TrimSpace(string(b))
			if v == "" {
				return "", fmt.Errorf("%s_file: %s is empty", what, file)
			}
			return v, nil
		}
		return inline, nil
	}
	switch wc.Kind {
	case KindDingTalk, KindSlack, KindFeishu, KindGeneric:
	default:
		return Webhook{}, fmt.Errorf("kind %q: want dingtalk, slack, feishu or generic", wc.Kind)
	}
	if wc.URL != "" && wc.Kind != KindGeneric {
		return Webhook{}, errors.New("url: a chat webhook's URL holds its token: give url_env or url_file")
	}
	rawURL, err := secretOf("url", wc.URL, wc.URLEnv, wc.URLFile)
	if err != nil {
		return Webhook{}, err
	}
	if rawURL == "" {
		return Webhook{}, errors.New("url: give url_env or url_file (or url, for a generic webhook)")
	}
	secret, err := secretOf("secret", "", wc.SecretEnv, wc.SecretFile)
	if err != nil {
		return Webhook{}, err
	}
	return wc.build(rawURL, secret)
}

func (wc WebhookConfig) build(rawURL, secret string) (Webhook, error) {
	w := Webhook{Name: wc.Name, Kind: wc.Kind, url: rawURL, secret: secret, Limits: wc.Limits, Retry: wc.Retry,
		DigestItems: wc.DigestItems, Blocks: wc.Blocks, Card: wc.Card, Timeout: wc.Timeout}
	if w.Name == "" {
		return w, errors.New("name: required")
	}
	if u, err := url.Parse(rawURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return w, errors.New("url: not an http(s) URL") // the URL itself is a secret: not quoted
	}
	if secret != "" && w.Kind != KindDingTalk && w.Kind != KindFeishu {
		return w, errors.New("secret: only DingTalk and Feishu webhooks sign their requests")
	}
	if w.Blocks && w.Kind != KindSlack {
		return w, errors.New("blocks: Slack only")
	}
	if w.Card && w.Kind != KindFeishu {
		return w, errors.New("card: Feishu only")
	}
	switch w.Kind {
	case KindDingTalk:
		if w.Limits == nil {
			w.Limits = []LimitConfig{{Messages: 20, Per: time.Minute}}
		}
	case KindSlack:
		if w.Limits == nil {
			w.Limits = []LimitConfig{{Messages: 1, Per: time.Second}}
		}
	case KindFeishu:
		if w.Limits == nil {
			w.Limits = []LimitConfig{{Messages: 100, Per: time.Minute}, {Messages: 5, Per: time.Second}}
		}
	case KindGeneric:
	default:
		return w, fmt.Errorf("kind %q: want dingtalk, slack, feishu or generic", w.Kind)
	}
	for _, l := range w.Limits {
		if l.Messages <= 0 || l.Per <= 0 {
			return w, fmt.Errorf("limits: %d per %v: both must be positive", l.Messages, l.Per)
		}
	}
	r := &w.Retry
	if r.Initial == 0 {
		r.Initial = time.Second
	}
	if r.MaxInterval == 0 {
		r.MaxInterval = time.Minute
	}
	if r.MaxAttempts == 0 {
		r.MaxAttempts = 8
	}
	if r.MaxElapsed == 0 {
		r.MaxElapsed = 10 * time.Minute
	}
	if r.Initial < 0 || r.MaxInterval < r.Initial || r.MaxAttempts < 1 || r.MaxElapsed < 0 {
		return w, errors.New("retry: initial must be positive and at most max_interval, max_attempts at least 1")
	}
	if w.DigestItems == 0 {
		w.DigestItems = 20
	}
	if w.DigestItems < 1 {
		return w, errors.New("digest_items: at least 1")
	}
	if w.Timeout == 0 {
		w.Timeout = 10 * time.Second
	}
	return w, nil
}

func (rc RuleConfig) resolve(webhooks map[string]int) (Rule, error) {
	r := Rule{Name: rc.Name, Filter: events.Filter{Accounts: rc.Accounts, Sources: rc.Sources, Regions: rc.Regions, Commands: rc.Commands}}
	statuses := func(what string, in []string, def []events.Status) ([]events.Status, error) {
		if len(in) == 0 {
			return def, nil
		}
		out := make([]events.Status, 0, len(in))
		for _, s := range in {
			st := diff.NormalizeStatus(s)
			if !st.Known() {
				return nil, fmt.Errorf("%s: unknown status %q", what, s)
			}
			out = append(out, st)
		}
		return out, nil
	}
	var err error
	if r.Statuses, err = statuses("statuses", rc.Statuses, DefaultStatuses()); err != nil {
		return r, err
	}
	if r.InstanceStatuses, err = statuses("instance_statuses", rc.InstanceStatuses, DefaultInstanceStatuses()); err != nil {
		return r, err
	}
	for _, s := range rc.Sources {
		if s != string(diff.SourceECS) && s != string(diff.SourceSWAS) {
			return r, fmt.Errorf("sources: %q: want ecs or swas", s)
		}
	}
	if len(rc.Webhooks) == 0 {
		for _, i := range webhooks {
			r.Webhooks = append(r.Webhooks, i)
		}
		slices.Sort(r.Webhooks)
		return r, nil
	}
	for _, name := range rc.Webhooks {
		i, ok := webhooks[name]
		if !ok {
			return r, fmt.Errorf("webhooks: no webhook is named %q", name)
		}
		r.Webhooks = append(r.Webhooks, i)
	}
	return r, nil
}
