// Command casim serves the Cloud Assistant emulator (package castest) over
// HTTP, so that capoller, the real SDK or any other client can be pointed at
// it with --endpoint.
//
// The key pair of --access-key-id and --access-key-secret is the default
// account. Each --account name:keyid:secret[:token] serves one more account
// on the same listener, with its own fleet, invocations and quota windows;
// a request is served for the account its AccessKeyId belongs to:
//
//	casim --access-key-id LTAIdefault --access-key-secret s0 \
//		--account prod:LTAIprod:s1 --account staging:STS.staging:s2:token
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
	fs := flag.NewFlagSet("casim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	akID := fs.String("access-key-id", os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"), "the access key id clients must sign with (default $ALIBABA_CLOUD_ACCESS_KEY_ID)")
	akSecret := fs.String("access-key-secret", os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET"), "the access key secret (default $ALIBABA_CLOUD_ACCESS_KEY_SECRET)")
	securityToken := fs.String("security-token", "", "if set, the STS SecurityToken every request must be signed with")
	instances := fs.Int("instances", 3, "simulated instances per product and region")
	regions := fs.String("regions", "cn-hangzhou", "comma-separated regions to serve")
	workload := fs.Duration("workload", 0, "if positive, invoke a random command this often")
	retention := fs.String("retention", string(castest.RetentionCurrent), "documented retention: current (30 days, 10,000 records per region) or legacy (four weeks, 100,000)")
	deliveryTimeout := fs.Duration("delivery-timeout", 2*time.Second, "how long a run waits for an unresponsive agent")
	ossDelay := fs.Duration("oss-delivery-delay", 100*time.Millisecond, "how long the OSS delivery of a run's output (RunCommand's OssOutputDelivery) stays InProgress after the run")
	var b castest.Behaviour // where the documents are silent; see castest.Behaviour and /_casim/behaviour
	fs.StringVar(&b.Order, "order", "", "listing order: newest (default) or oldest")
	fs.BoolVar(&b.Ties, "ties", false, "list invocations created in the same second in any (stable) order within it")
	fs.BoolVar(&b.Unstable, "unstable", false, "change the order within a second between identical calls (implies --ties)")
	fs.BoolVar(&b.Drift, "drift", false, "make a NextToken an offset, not a cursor: pages skip or repeat records when the data changes")
	tokenTTL := fs.Duration("token-ttl", 0, "refuse a NextToken older than this with InvalidParameter.NextToken (0: never)")
	fs.BoolVar(&b.TokenExpiresOnChange, "token-expires-on-change", false, "refuse a NextToken once the data it pages through changed")
	fs.BoolVar(&b.StrictFilters, "strict-filters", false, "refuse status filter values the documents do not list")
	var accountFlags []string // parsed after the flags: the flag package would echo a bad value, secret and all
	fs.Func("account", "serve one more account, `name:keyid:secret[:token]`, with its own fleet and quota (repeatable; none of the parts may hold a colon)", func(v string) error {
		accountFlags = append(accountFlags, v)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "casim: unexpected arguments: %q\n", fs.Args())
		return 2
	}
	b.TokenTTL = castest.Duration(*tokenTTL)
	var accounts []castest.Account
	for i, v := range accountFlags {
		a, err := parseAccount(v)
		if err != nil {
			fmt.Fprintf(stderr, "casim: --account #%d: %v\n", i+1, err)
			return 2
		}
		accounts = append(accounts, a)
	}
	srv, err := castest.New(castest.Options{
		AccessKeyID: *akID, AccessKeySecret: *akSecret, SecurityToken: *securityToken, Instances: *instances,
		Regions: strings.Split(*regions, ","), DeliveryTimeout: *deliveryTimeout, OssDeliveryDelay: *ossDelay, Retention: castest.RetentionPolicy(*retention),
		Behaviour: b, Accounts: accounts,
	})
	if err != nil {
		fmt.Fprintln(stderr, "casim:", err)
		return 2
	}
	url, err := srv.Start(*listen)
	if err != nil {
		fmt.Fprintln(stderr, "casim:", err)
		return 1
	}
	fmt.Fprintf(stdout, "listening on %s\n", url)
	if *workload > 0 {
		go srv.RunWorkload(ctx, castest.WorkloadOptions{Every: *workload})
	}
	<-ctx.Done()
	if err := srv.Close(); err != nil {
		fmt.Fprintln(stderr, "casim: shutdown:", err)
		return 1
	}
	return 0
}

// parseAccount reads an --account value, name:keyid:secret[:token]. Its
// errors show the name only: the rest is a secret.
func parseAccount(v string) (castest.Account, error) {
	parts := strings.Split(v, ":")
	if len(parts) != 3 && len(parts) != 4 {
		return castest.Account{}, fmt.Errorf("want name:keyid:secret or name:keyid:secret:token, got %d colon-separated parts", len(parts))
	}
	a := castest.Account{Name: parts[0], AccessKeyID: parts[1], AccessKeySecret: parts[2]}
	if len(parts) == 4 {
		a.SecurityToken = parts[3]
		if a.SecurityToken == "" {
			return castest.Account{}, fmt.Errorf("account %q: the token after the third colon is empty", a.Name)
		}
	}
	return a, nil
}
