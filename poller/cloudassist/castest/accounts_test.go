package castest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	swas "github.com/aliyun/alibaba-cloud-sdk-go/services/swas-open"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

const region = "cn-hangzhou"

// keyPair is one account's credentials, as a client holds them.
type keyPair struct{ id, secret, token string }

func (k keyPair) provider() credentials.CredentialsProvider {
	if k.token != "" {
		return credentials.NewStaticSTSCredentialsProvider(k.id, k.secret, k.token)
	}
	return credentials.NewStaticAKCredentialsProvider(k.id, k.secret)
}

// The three accounts of newAccounts: the default one and two more, one of
// which signs with an STS token.
func defaultKey() keyPair { return keyPair{"LTAIdefault", "default-secret", ""} }
func prodKey() keyPair    { return keyPair{"LTAIprod", "prod-secret", ""} }
func stagingKey() keyPair { return keyPair{"STS.staging", "staging-secret", "staging-token"} }

func newAccounts(t *testing.T) (*castest.Server, string) {
	t.Helper()
	s, err := castest.New(castest.Options{AccessKeyID: defaultKey().id, AccessKeySecret: defaultKey().secret, Instances: 2,
		Regions: []string{region, "cn-beijing"},
		Accounts: []castest.Account{
			{Name: "prod", AccessKeyID: prodKey().id, AccessKeySecret: prodKey().secret},
			{Name: "staging", AccessKeyID: stagingKey().id, AccessKeySecret: stagingKey().secret, SecurityToken: stagingKey().token},
		}})
	if err != nil {
		t.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, base
}

// listerOptions points a cloudassist lister at base with key: the default
// account's as static keys, the others' as a Credential.
func listerOptions(base string, key keyPair) cloudassist.Options {
	o := cloudassist.Options{Region: region, Endpoint: base, Timeout: 5 * time.Second, TransientRetries: -1, ThrottleRetries: -1}
	if key == defaultKey() {
		o.AccessKeyID, o.AccessKeySecret = key.id, key.secret
	} else {
		o.Credential = key.provider()
	}
	return o
}

// invokeIDs lists the invocation ids a lister of source sees.
func invokeIDs(t *testing.T, source string, opts cloudassist.Options) ([]string, error) {
	t.Helper()
	var l interface {
		Snapshot(context.Context) (diff.Snapshot, error)
	}
	var err error
	switch source {
	case "ecs":
		l, err = cloudassist.NewECS(opts)
	case "ecs-results":
		l, err = cloudassist.NewECSResults(opts)
	case "swas":
		l, err = cloudassist.NewSWAS(opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	snap, err := l.Snapshot(t.Context())
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range snap.Records {
		if !slices.Contains(ids, r.InvokeID) {
			ids = append(ids, r.InvokeID)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// idsOf returns the ids of an account's ECS or SWAS instances in region.
func idsOf(a *castest.AccountHandle, product string) []string {
	var ids []string
	for _, inst := range a.Instances() {
		if inst.Product == product && inst.Region == region {
			ids = append(ids, inst.ID)
		}
	}
	return ids
}

func apiCode(err error) string {
	var apiErr *cloudassist.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code
	}
	return ""
}

// TestAccountsSeeOnlyTheirOwnWork: three accounts on one listener, each
// listed through the real SDK with its own key pair, see only their own
// invocations, on fleets of their own; the default account keeps the
// fleet of an emulator without accounts.
func TestAccountsSeeOnlyTheirOwnWork(t *testing.T) {
	s, base := newAccounts(t)
	if got := s.Accounts(); !slices.Equal(got, []string{"default", "prod", "staging"}) {
		t.Errorf("Accounts() = %v", got)
	}

	// Fleets: the default account's ids are the ones it always had; each
	// account's are its own.
	plain, err := castest.New(castest.Options{AccessKeyID: "k", AccessKeySecret: "s", Instances: 2, Regions: []string{region, "cn-beijing"}})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var before []string
	for _, inst := range plain.Instances() {
		before = append(before, inst.ID)
		if inst.Account != castest.DefaultAccount {
			t.Errorf("instance %s of an emulator without accounts belongs to %q", inst.ID, inst.Account)
		}
	}
	var now []string
	for _, inst := range s.Account(castest.DefaultAccount).Instances() {
		now = append(now, inst.ID)
	}
	if !slices.Equal(before, now) {
		t.Errorf("the default account's fleet changed:\n%v\n%v", before, now)
	}
	seen := map[string]string{}
	for _, inst := range s.Instances() {
		if other, dup := seen[inst.ID]; dup {
			t.Errorf("instance %s belongs to %s and %s", inst.ID, other, inst.Account)
		}
		seen[inst.ID] = inst.Account
	}
	if len(seen) != 3*2*2*2 {
		t.Errorf("%d instances, want 2 per product, region and account", len(seen))
	}

	// Work: ECS in each account in process, SWAS through the SDK.
	keys := map[string]keyPair{"default": defaultKey(), "prod": prodKey(), "staging": stagingKey()}
	want := map[string]map[string][]string{} // account → source → invoke ids
	for _, name := range s.Accounts() {
		a := s.Account(name)
		id, err := a.Invoke(region, idsOf(a, castest.ProductECS), "echo "+name, 60)
		if err != nil {
			t.Fatal(err)
		}
		swasID := runSWAS(t, base, keys[name], idsOf(a, castest.ProductSWAS)[0])
		want[name] = map[string][]string{"ecs": {id}, "ecs-results": {id}, "swas": {swasID}}
	}
	if id, err := s.Invoke(region, idsOf(s.Account("prod"), castest.ProductECS), "echo cross", 60); err == nil || !strings.Contains(err.Error(), "InvalidInstance.NotFound") {
		t.Errorf("the default account ran %s on prod's instances (%v); want InvalidInstance.NotFound", id, err)
	}
	if _, err := s.Account("nobody").Invoke(region, nil, "echo", 60); err == nil || !strings.Contains(err.Error(), `"nobody"`) {
		t.Errorf("Invoke in an account not served: %v", err)
	}

	for name, key := range keys {
		for _, source := range []string{"ecs", "ecs-results", "swas"} {
			got, err := invokeIDs(t, source, listerOptions(base, key))
			if err != nil {
				t.Fatalf("%s %s: %v", name, source, err)
			}
			if !slices.Equal(got, want[name][source]) {
				t.Errorf("%s lists %s %v, want %v", name, source, got, want[name][source])
			}
		}
	}

	// Another account's invocation cannot be stopped either.
	client := ecsClient(t, base, prodKey())
	stop := ecs.CreateStopInvocationRequest()
	stop.InvokeId = want["default"]["ecs"][0]
	if _, err := client.StopInvocation(stop); err == nil || !strings.Contains(err.Error(), "InvalidInvokeId.NotFound") {
		t.Errorf("prod stopped the default account's invocation: %v", err)
	}
}

// TestAccountsRefuseWrongKeys: a key pair no account has, a good id with
// another account's secret, and an STS account without its token are
// refused as Alibaba refuses them.
func TestAccountsRefuseWrongKeys(t *testing.T) {
	_, base := newAccounts(t)
	for _, tc := range []struct {
		key  keyPair
		code string
	}{
		{keyPair{"LTAInobody", "nobody-secret", ""}, "InvalidAccessKeyId.NotFound"},
		{keyPair{prodKey().id, defaultKey().secret, ""}, "SignatureDoesNotMatch"},
		{keyPair{defaultKey().id, prodKey().secret, ""}, "SignatureDoesNotMatch"},
		{keyPair{stagingKey().id, stagingKey().secret, ""}, "InvalidSecurityToken.Malformed"},
		{keyPair{stagingKey().id, stagingKey().secret, "another-token"}, "InvalidSecurityToken.MismatchWithAccessKey"},
	} {
		_, err := invokeIDs(t, "ecs", listerOptions(base, tc.key))
		if got := apiCode(err); got != tc.code {
			t.Errorf("key %s: %v (code %q), want %s", tc.key.id, err, got, tc.code)
		}
	}
	both := listerOptions(base, prodKey())
	both.AccessKeyID, both.AccessKeySecret = prodKey().id, prodKey().secret
	if _, err := cloudassist.NewECS(both); err == nil || strings.Contains(err.Error(), prodKey().secret) {
		t.Errorf("a lister with a Credential and static keys: %v; want it refused", err)
	}
}

// TestAccountsInTheTruth: every truth entry names its account, in process
// and on the control plane, which filters by account as asked.
func TestAccountsInTheTruth(t *testing.T) {
	s, base := newAccounts(t)
	prod := s.Account("prod")
	prodID, err := prod.Invoke(region, idsOf(prod, castest.ProductECS)[:1], "exit 0", 60)
	if err != nil {
		t.Fatal(err)
	}
	defaultID, err := s.Invoke(region, idsOf(s.Account(castest.DefaultAccount), castest.ProductECS)[:1], "exit 0", 60)
	if err != nil {
		t.Fatal(err)
	}
	owner := map[string]string{prodID: "prod", defaultID: castest.DefaultAccount}
	for _, e := range s.Truth() {
		if e.Account != owner[e.InvokeID] {
			t.Errorf("truth entry %+v: account %q, want %q", e, e.Account, owner[e.InvokeID])
		}
	}
	for _, e := range prod.Truth() {
		if e.InvokeID != prodID {
			t.Errorf("prod's truth has %+v", e)
		}
	}
	if len(prod.Truth()) == 0 || len(s.Account("staging").Truth()) != 0 {
		t.Errorf("truth per account: prod %d entries, staging %d", len(prod.Truth()), len(s.Account("staging").Truth()))
	}

	lines := get(t, base+"/_casim/truth?account=prod")
	sc := bufio.NewScanner(bytes.NewReader(lines))
	n := 0
	for sc.Scan() {
		var e castest.TruthEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Account != "prod" || !bytes.Contains(sc.Bytes(), []byte(`"account":"prod"`)) {
			t.Errorf("GET /_casim/truth?account=prod: %s (%v)", sc.Text(), err)
		}
		n++
	}
	if n != len(prod.Truth()) {
		t.Errorf("GET /_casim/truth?account=prod has %d lines, want %d", n, len(prod.Truth()))
	}
	var insts []castest.Instance
	if err := json.Unmarshal(get(t, base+"/_casim/instances"), &insts); err != nil {
		t.Fatal(err)
	}
	accounts := map[string]int{}
	for _, inst := range insts {
		accounts[inst.Account]++
	}
	if len(insts) != len(s.Instances()) || accounts["default"] != accounts["prod"] || accounts["prod"] != accounts["staging"] || len(accounts) != 3 {
		t.Errorf("GET /_casim/instances: %d instances per account %v", len(insts), accounts)
	}
	if err := json.Unmarshal(get(t, base+"/_casim/instances?account=staging"), &insts); err != nil || len(insts) != len(s.Account("staging").Instances()) {
		t.Errorf("GET /_casim/instances?account=staging: %d instances (%v)", len(insts), err)
	}
	resp, err := http.Get(base + "/_casim/truth?account=nobody")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /_casim/truth?account=nobody: HTTP %d, want 404", resp.StatusCode)
	}
}

// TestAccountsHaveTheirOwnQuota: Alibaba throttles each account on its
// own, so one account spending its quota leaves another's untouched.
func TestAccountsHaveTheirOwnQuota(t *testing.T) {
	s, base := newAccounts(t)
	if err := s.SetQuota(2, time.Hour); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		_, err := invokeIDs(t, "ecs", listerOptions(base, prodKey()))
		if code := apiCode(err); i < 2 && err != nil || i == 2 && code != "Throttling.User" {
			t.Errorf("prod's call %d: %v, want the third throttled", i+1, err)
		}
	}
	for _, key := range []keyPair{defaultKey(), stagingKey()} {
		for i := range 2 {
			if _, err := invokeIDs(t, "ecs", listerOptions(base, key)); err != nil {
				t.Errorf("%s's call %d after prod spent its quota: %v", key.id, i+1, err)
			}
		}
	}
	if got := s.Account("prod").Throttled()["DescribeInvocations"]; got != 1 {
		t.Errorf("prod throttled %d times, want 1", got)
	}
	if got := s.Account(castest.DefaultAccount).Throttled()["DescribeInvocations"]; got != 0 {
		t.Errorf("default throttled %d times, want 0", got)
	}
	if got := s.Throttled()["DescribeInvocations"]; got != 1 {
		t.Errorf("throttled %d times in all, want 1", got)
	}
	if got := len(s.Account("prod").CallLog("DescribeInvocations")); got != 2 {
		t.Errorf("prod's call log has %d admitted calls, want 2", got)
	}
	if got := len(s.CallLog("DescribeInvocations")); got != 6 {
		t.Errorf("the call log has %d admitted calls, want 6", got)
	}
	if got := s.Account("staging").Calls()["DescribeInvocations"]; got != 2 {
		t.Errorf("staging made %d calls, want 2", got)
	}
	// Faults can aim at one account.
	if err := s.InjectFault(castest.Fault{Kind: castest.FaultUnavailable, Account: "staging", Count: -1}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetQuota(0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := invokeIDs(t, "ecs", listerOptions(base, stagingKey())); apiCode(err) != "ServiceUnavailable" {
		t.Errorf("staging under its fault: %v", err)
	}
	if _, err := invokeIDs(t, "ecs", listerOptions(base, prodKey())); err != nil {
		t.Errorf("prod under staging's fault: %v", err)
	}
}

// TestAccountsSaveAndLoad: saved state keeps each invocation's account,
// and an emulator that does not serve an account refuses its state.
func TestAccountsSaveAndLoad(t *testing.T) {
	s, _ := newAccounts(t)
	prod := s.Account("prod")
	id, err := prod.Invoke(region, idsOf(prod, castest.ProductECS), "exit 0", 60)
	if err != nil {
		t.Fatal(err)
	}
	var saved bytes.Buffer
	if err := s.SaveState(&saved); err != nil {
		t.Fatal(err)
	}
	again, base := newAccounts(t)
	if err := again.LoadState(bytes.NewReader(saved.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got, err := invokeIDs(t, "ecs", listerOptions(base, prodKey())); err != nil || !slices.Equal(got, []string{id}) {
		t.Errorf("prod lists %v (%v) after a reload, want [%s]", got, err, id)
	}
	if got, err := invokeIDs(t, "ecs", listerOptions(base, defaultKey())); err != nil || len(got) != 0 {
		t.Errorf("default lists %v (%v) after a reload, want nothing", got, err)
	}
	alone, err := castest.New(castest.Options{AccessKeyID: "k", AccessKeySecret: "s", Instances: 2, Regions: []string{region, "cn-beijing"}})
	if err != nil {
		t.Fatal(err)
	}
	defer alone.Close()
	if err := alone.LoadState(bytes.NewReader(saved.Bytes())); err == nil || !strings.Contains(err.Error(), `"prod"`) {
		t.Errorf("an emulator without prod loaded its state: %v", err)
	}
}

func TestAccountOptionsAreChecked(t *testing.T) {
	for _, tc := range []struct {
		accounts []castest.Account
		want     string
	}{
		{[]castest.Account{{Name: "default", AccessKeyID: "a", AccessKeySecret: "sekrit"}}, `"default"`},
		{[]castest.Account{{Name: "a b", AccessKeyID: "a", AccessKeySecret: "sekrit"}}, `"a b"`},
		{[]castest.Account{{Name: "", AccessKeyID: "a", AccessKeySecret: "sekrit"}}, "name"},
		{[]castest.Account{{Name: strings.Repeat("a", 65), AccessKeyID: "a", AccessKeySecret: "sekrit"}}, "64"},
		{[]castest.Account{{Name: "prod", AccessKeyID: "a"}}, `"prod"`},
		{[]castest.Account{{Name: "prod", AccessKeyID: "a", AccessKeySecret: "sekrit"}, {Name: "prod", AccessKeyID: "b", AccessKeySecret: "sekrit"}}, "twice"},
		{[]castest.Account{{Name: "prod", AccessKeyID: "k", AccessKeySecret: "sekrit"}}, "same access key id"},
	} {
		s, err := castest.New(castest.Options{AccessKeyID: "k", AccessKeySecret: "sekrit", Accounts: tc.accounts})
		if err == nil {
			_ = s.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "sekrit") {
			t.Errorf("%+v: %v, want an error naming %s", tc.accounts, err, tc.want)
		}
	}
}

func ecsClient(t *testing.T, base string, key keyPair) *ecs.Client {
	t.Helper()
	c, err := ecs.NewClientWithOptions(region, sdk.NewConfig().WithAutoRetry(false), key.provider())
	if err != nil {
		t.Fatal(err)
	}
	c.Domain = strings.TrimPrefix(base, "http://")
	return c
}

// runSWAS runs a command on a SWAS instance through the SDK, signed with
// key, and returns its invoke id.
func runSWAS(t *testing.T, base string, key keyPair, instance string) string {
	t.Helper()
	c, err := swas.NewClientWithOptions(region, sdk.NewConfig().WithAutoRetry(false), key.provider())
	if err != nil {
		t.Fatal(err)
	}
	c.Domain = strings.TrimPrefix(base, "http://")
	req := swas.CreateRunCommandRequest()
	req.InstanceId, req.Type, req.CommandContent, req.Timeout = instance, "RunShellScript", "echo swas", requests.NewInteger(60)
	resp, err := c.RunCommand(req)
	if err != nil {
		t.Fatalf("SWAS RunCommand as %s: %v", key.id, err)
	}
	return resp.InvokeId
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d %s", url, resp.StatusCode, b.String())
	}
	return b.Bytes()
}
