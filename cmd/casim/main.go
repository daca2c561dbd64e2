// Command casim serves the Cloud Assistant emulator (package castest) over
// HTTP, so that capoller, the real SDK or any other client can be pointed at
// it with --endpoint.
//
// Requests may be signed with RPC signature v1 (the V1 SDKs) or
// ACS3-HMAC-SHA256 (the V2 SDKs' default, alibabacloud-go/* and
// @alicloud/* on npm); both are verified. Besides RunCommand and the
// listings, ECS serves the command lifecycle (CreateCommand, InvokeCommand,
// DescribeCommands, ModifyCommand, DeleteCommand) and
// DescribeCloudAssistantStatus. README's "Testing your own automation
// against casim" shows how to point each client at it.
//
// The key pair of --access-key-id and --access-key-secret is the default
// account. Each --account name:keyid:secret[:token[:uid]] serves one more
// account on the same listener, with its own fleet, invocations and quota
// windows; a request is served for the account its AccessKeyId belongs to:
//
//	casim --access-key-id LTAIdefault --access-key-secret s0 \
//		--account prod:LTAIprod:s1 --account staging:STS.staging:s2:token \
//		--account dev:LTAIdev:s3::1234567890123456
//
// With --eventbridge-url, casim POSTs an ecs:CloudAssistant:TaskCompleted
// CloudEvent there (with --eventbridge-token as a bearer token) each time an
// ECS run ends on an instance in a status the documents list (Success,
// Failed, Timeout, Cancelled, Terminated, Aborted, Invalid; POST
// /_casim/eventbridge may add Error and Stopped). Each account's events
// carry its uid: --uid for the default account, the fifth part of
// --account for the others, or one derived from the name. GET and POST
// /_casim/eventbridge show the counts and make delivery lossy, duplicated,
// late or out of order.
//
// GET /_casim/instances and /_casim/truth name each record's account, and
// take ?account=NAME to show one.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/capoller/capoller/poller/cloudassist/castest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run serves until ctx ends and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, code := parseFlags(args, stderr)
	if code >= 0 {
		return code
	}
	srv, err := castest.New(cfg.opts)
	if err != nil {
		fmt.Fprintln(stderr, "casim:", err)
		return 2
	}
	url, err := srv.Start(cfg.listen)
	if err != nil {
		fmt.Fprintln(stderr, "casim:", err)
		return 1
	}
	fmt.Fprintf(stdout, "listening on %s\n", url)
	if cfg.workload > 0 {
		go srv.RunWorkload(ctx, castest.WorkloadOptions{Every: cfg.workload})
	}
	<-ctx.Done()
	if err := srv.Close(); err != nil {
		fmt.Fprintln(stderr, "casim: shutdown:", err)
		return 1
	}
	return 0
}

// config is what casim's flags ask for.
type config struct {
	listen   string
	workload time.Duration
	opts     castest.Options
}

// parseFlags reads casim's flags. A code of 0 or more is the exit code to
// stop with (0 after --help); -1 means serve.
func parseFlags(args []string, stderr io.Writer) (config, int) {
	fs := flag.NewFlagSet("casim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	o := &cfg.opts
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:0", "address to listen on")
	fs.StringVar(&o.AccessKeyID, "access-key-id", os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"), "the access key id clients must sign with (default $ALIBABA_CLOUD_ACCESS_KEY_ID)")
	fs.StringVar(&o.AccessKeySecret, "access-key-secret", os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET"), "the access key secret (default $ALIBABA_CLOUD_ACCESS_KEY_SECRET)")
	fs.StringVar(&o.SecurityToken, "security-token", "", "if set, the STS SecurityToken every request must be signed with")
	fs.StringVar(&o.UID, "uid", "", "the default account's Alibaba Cloud account id (16 digits) in its EventBridge events (default: one derived from its name)")
	fs.IntVar(&o.Instances, "instances", 3, "simulated instances per product and region")
	regions := fs.String("regions", "cn-hangzhou", "comma-separated regions to serve")
	fs.DurationVar(&cfg.workload, "workload", 0, "if positive, invoke a random command this often")
	retention := fs.String("retention", string(castest.RetentionCurrent), "documented retention: current (30 days, 10,000 records per region) or legacy (four weeks, 100,000)")
	fs.DurationVar(&o.DeliveryTimeout, "delivery-timeout", 2*time.Second, "how long a run waits for an unresponsive agent")
	fs.DurationVar(&o.OssDeliveryDelay, "oss-delivery-delay", 100*time.Millisecond, "how long the OSS delivery of a run's output (RunCommand's OssOutputDelivery) stays InProgress after the run")
	fs.StringVar(&o.EventBridge.URL, "eventbridge-url", "", "if set, POST an ecs:CloudAssistant:TaskCompleted CloudEvent here each time an ECS run ends on an instance in a documented status (delivery knobs and counts: /_casim/eventbridge)")
	fs.StringVar(&o.EventBridge.Token, "eventbridge-token", "", "the bearer token of each --eventbridge-url POST")
	b := &o.Behaviour // where the documents are silent; see castest.Behaviour and /_casim/behaviour
	fs.StringVar(&b.Order, "order", "", "listing order: newest (default) or oldest")
	fs.BoolVar(&b.Ties, "ties", false, "list invocations created in the same second in any (stable) order within it")
	fs.BoolVar(&b.Unstable, "unstable", false, "change the order within a second between identical calls (implies --ties)")
	fs.BoolVar(&b.Drift, "drift", false, "make a NextToken an offset, not a cursor: pages skip or repeat records when the data changes")
	tokenTTL := fs.Duration("token-ttl", 0, "refuse a NextToken older than this with InvalidParameter.NextToken (0: never)")
	fs.BoolVar(&b.TokenExpiresOnChange, "token-expires-on-change", false, "refuse a NextToken once the data it pages through changed")
	fs.BoolVar(&b.StrictFilters, "strict-filters", false, "refuse status filter values the documents do not list")
	var accountFlags []string // parsed after the flags: the flag package would echo a bad value, secret and all
	fs.Func("account", "serve one more account, `name:keyid:secret[:token[:uid]]`, with its own fleet and quota (repeatable; none of the parts may hold a colon; the token may be empty when a uid follows)", func(v string) error {
		accountFlags = append(accountFlags, v)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, 0
		}
		return cfg, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "casim: unexpected arguments: %q\n", fs.Args())
		return cfg, 2
	}
	b.TokenTTL = castest.Duration(*tokenTTL)
	o.Regions, o.Retention = strings.Split(*regions, ","), castest.RetentionPolicy(*retention)
	for i, v := range accountFlags {
		a, err := parseAccount(v)
		if err != nil {
			fmt.Fprintf(stderr, "casim: --account #%d: %v\n", i+1, err)
			return cfg, 2
		}
		o.Accounts = append(o.Accounts, a)
	}
	return cfg, -1
}

// parseAccount reads an --account value, name:keyid:secret[:token[:uid]].
// Its errors show the name only: the rest is a secret.
func parseAccount(v string) (castest.Account, error) {
	parts := strings.Split(v, ":")
	if len(parts) < 3 || len(parts) > 5 {
		return castest.Account{}, fmt.Errorf("want name:keyid:secret, name:keyid:secret:token or name:keyid:secret:[token]:uid, got %d colon-separated parts", len(parts))
	}
	a := castest.Account{Name: parts[0], AccessKeyID: parts[1], AccessKeySecret: parts[2]}
	if len(parts) >= 4 {
		a.SecurityToken = parts[3]
		// An empty token is a slip, unless it only makes room for a uid.
		if a.SecurityToken == "" && len(parts) == 4 {
			return castest.Account{}, fmt.Errorf("account %q: the token after the third colon is empty", a.Name)
		}
	}
	if len(parts) == 5 {
		a.UID = parts[4]
		if a.UID == "" {
			return castest.Account{}, fmt.Errorf("account %q: the uid after the fourth colon is empty", a.Name)
		}
	}
	return a, nil
}
