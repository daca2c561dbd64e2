package castest

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	swas "github.com/aliyun/alibaba-cloud-sdk-go/services/swas-open"
)

// manualClock is a clock that moves only when told. It starts a few
// minutes ahead of the wall clock, in the middle of a second: well within
// the signature's allowed skew, and ahead of the wall clock so that the
// emulator's timer never fires early and spins.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func newManualClock() *manualClock {
	return &manualClock{t: time.Now().Add(3 * time.Minute).Truncate(time.Second).Add(500 * time.Millisecond)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// behaviourFixture is an emulator on a manual clock, with real SDK clients.
type behaviourFixture struct {
	t    *testing.T
	s    *Server
	base string
	clk  *manualClock
	ecs  *ecs.Client
	swas *swas.Client
}

func newBehaviourFixture(t *testing.T, b Behaviour) *behaviourFixture {
	t.Helper()
	clk := newManualClock()
	s, err := New(Options{AccessKeyID: keyID, AccessKeySecret: secret, Instances: 2, Now: clk.Now, Behaviour: b})
	if err != nil {
		t.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	cfg := sdk.NewConfig().WithAutoRetry(false).WithTimeout(5 * time.Second)
	cred := credentials.NewStaticAKCredentialsProvider(keyID, secret)
	ec, err := ecs.NewClientWithOptions("cn-hangzhou", cfg, cred)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := swas.NewClientWithOptions("cn-hangzhou", cfg, cred)
	if err != nil {
		t.Fatal(err)
	}
	ec.Domain = strings.TrimPrefix(base, "http://")
	sc.Domain = ec.Domain
	return &behaviourFixture{t: t, s: s, base: base, clk: clk, ecs: ec, swas: sc}
}

func (f *behaviourFixture) instances(product string) []string {
	var ids []string
	for _, inst := range f.s.Instances() {
		if inst.Product == product && inst.Region == "cn-hangzhou" {
			ids = append(ids, inst.ID)
		}
	}
	return ids
}

// run creates n ECS invocations, each on every instance, and returns
// their ids in creation order.
func (f *behaviourFixture) run(n int) []string {
	f.t.Helper()
	ids := f.instances(ProductECS)
	var out []string
	for range n {
		req := ecs.CreateRunCommandRequest()
		req.Type, req.CommandContent, req.InstanceId = "RunShellScript", "echo hi", &ids
		resp, err := f.ecs.RunCommand(req)
		if err != nil {
			f.t.Fatalf("RunCommand: %v", err)
		}
		out = append(out, resp.InvokeId)
	}
	return out
}

func (f *behaviourFixture) runSWAS(n int) []string {
	f.t.Helper()
	var out []string
	for range n {
		req := swas.CreateRunCommandRequest()
		req.Type, req.CommandContent, req.InstanceId = "RunShellScript", "echo hi", f.instances(ProductSWAS)[0]
		resp, err := f.swas.RunCommand(req)
		if err != nil {
			f.t.Fatalf("SWAS RunCommand: %v", err)
		}
		out = append(out, resp.InvokeId)
	}
	return out
}

// page reads one DescribeInvocations page by NextToken.
func (f *behaviourFixture) page(size int, token, status string) ([]string, string, error) {
	req := ecs.CreateDescribeInvocationsRequest()
	req.MaxResults, req.NextToken, req.InvokeStatus = requests.NewInteger(size), token, status
	resp, err := f.ecs.DescribeInvocations(req)
	if err != nil {
		return nil, "", err
	}
	var ids []string
	for _, inv := range resp.Invocations.Invocation {
		ids = append(ids, inv.InvokeId)
	}
	return ids, resp.NextToken, nil
}

// all reads every DescribeInvocations page.
func (f *behaviourFixture) all(size int) []string {
	f.t.Helper()
	var ids []string
	token := ""
	for {
		page, next, err := f.page(size, token, "")
		if err != nil {
			f.t.Fatalf("DescribeInvocations: %v", err)
		}
		ids = append(ids, page...)
		if next == "" {
			return ids
		}
		token = next
	}
}

// resultsPage reads one DescribeInvocationResults page: "invokeId/instanceId" per row.
func (f *behaviourFixture) resultsPage(size int, token, status string) ([]string, string, error) {
	req := ecs.CreateDescribeInvocationResultsRequest()
	req.MaxResults, req.NextToken, req.InvokeRecordStatus = requests.NewInteger(size), token, status
	resp, err := f.ecs.DescribeInvocationResults(req)
	if err != nil {
		return nil, "", err
	}
	var rows []string
	for _, r := range resp.Invocation.InvocationResults.InvocationResult {
		rows = append(rows, r.InvokeId+"/"+r.InstanceId)
	}
	return rows, resp.Invocation.NextToken, nil
}

func (f *behaviourFixture) swasList(status string) ([]swas.Command, error) {
	req := swas.CreateDescribeCommandInvocationsRequest()
	req.PageSize, req.InvocationStatus = "50", status
	resp, err := f.swas.DescribeCommandInvocations(req)
	if err != nil {
		return nil, err
	}
	return resp.CommandInvocations, nil
}

func (f *behaviourFixture) swasIDs() []string {
	f.t.Helper()
	cmds, err := f.swasList("")
	if err != nil {
		f.t.Fatalf("DescribeCommandInvocations: %v", err)
	}
	var ids []string
	for _, c := range cmds {
		ids = append(ids, c.InvokeId)
	}
	return ids
}

func reversed(ids []string) []string {
	out := slices.Clone(ids)
	slices.Reverse(out)
	return out
}

// refused checks that err is the API's HTTP 400 with code.
func refused(t *testing.T, what string, err error, code string) {
	t.Helper()
	var se *sdkerrors.ServerError
	if !errors.As(err, &se) {
		t.Fatalf("%s: got %v, want HTTP 400 %s", what, err, code)
	}
	if se.HttpStatus() != http.StatusBadRequest || se.ErrorCode() != code {
		t.Fatalf("%s: got HTTP %d %s, want HTTP 400 %s", what, se.HttpStatus(), se.ErrorCode(), code)
	}
}

func must[T any](t *testing.T, what string) func(T, string, error) (T, string) {
	return func(v T, next string, err error) (T, string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v, next
	}
}

func TestZeroBehaviourIsTheIdealAPI(t *testing.T) {
	f := newBehaviourFixture(t, Behaviour{})
	if b := f.s.Behaviour(); b != (Behaviour{}) || b.String() != "ideal" {
		t.Fatalf("default behaviour = %+v (%s)", b, b)
	}
	ids := f.run(5) // all in one second: ordered by creation all the same
	if got := f.all(50); !slices.Equal(got, reversed(ids)) {
		t.Fatalf("listing = %v, want newest first %v", got, reversed(ids))
	}
	// An arrival between pages is neither repeated nor shifts the cursor.
	first, tok := must[[]string](t, "page 1")(f.page(2, "", ""))
	arrival := f.run(1)
	f.clk.Add(time.Minute) // an ideal token never expires
	second, _ := must[[]string](t, "page 2")(f.page(2, tok, ""))
	if want := reversed(ids); !slices.Equal(first, want[:2]) || !slices.Equal(second, want[2:4]) {
		t.Errorf("pages around an arrival = %v %v, want %v %v", first, second, want[:2], want[2:4])
	}
	if got := f.all(2); !slices.Equal(got, append(arrival, reversed(ids)...)) {
		t.Errorf("full listing = %v", got)
	}
	// Any filter value is accepted.
	if _, _, err := f.page(10, "", "Pending"); err != nil {
		t.Errorf("InvokeStatus=Pending refused without StrictFilters: %v", err)
	}
}

func TestOrderOldestListsOldestFirst(t *testing.T) {
	f := newBehaviourFixture(t, Behaviour{Order: OrderOldest})
	var ids, swasIDs []string
	for range 3 {
		ids = append(ids, f.run(1)...)
		swasIDs = append(swasIDs, f.runSWAS(1)...)
		f.clk.Add(time.Second)
	}
	ids = append(ids, f.run(2)...) // two in the same second keep their creation order
	if got := f.all(50); !slices.Equal(got, ids) {
		t.Fatalf("one page = %v, want oldest first %v", got, ids)
	}
	if got := f.all(2); !slices.Equal(got, ids) {
		t.Errorf("pages of 2 = %v, want oldest first %v", got, ids)
	}
	req := ecs.CreateDescribeInvocationsRequest()
	req.PageSize, req.PageNumber = requests.NewInteger(2), requests.NewInteger(2)
	if resp, err := f.ecs.DescribeInvocations(req); err != nil || len(resp.Invocations.Invocation) != 2 ||
		resp.Invocations.Invocation[0].InvokeId != ids[2] {
		t.Errorf("PageNumber 2 of oldest first: %v %+v", err, resp)
	}
	var rows []string
	for tok := ""; ; {
		page, next := must[[]string](t, "results")(f.resultsPage(3, tok, ""))
		rows = append(rows, page...)
		if tok = next; tok == "" {
			break
		}
	}
	insts := f.instances(ProductECS)
	var want []string
	for _, id := range ids {
		for _, inst := range insts {
			want = append(want, id+"/"+inst)
		}
	}
	if !slices.Equal(rows, want) {
		t.Errorf("results = %v, want oldest first %v", rows, want)
	}
	if got := f.swasIDs(); !slices.Equal(got, swasIDs) {
		t.Errorf("SWAS = %v, want oldest first %v", got, swasIDs)
	}
}

func TestTiesShareASecondAndAreShuffled(t *testing.T) {
	f := newBehaviourFixture(t, Behaviour{Ties: true})
	older := f.run(8)
	swasIDs := f.runSWAS(8)
	req := ecs.CreateDescribeInvocationsRequest()
	req.MaxResults = requests.NewInteger(50)
	resp, err := f.ecs.DescribeInvocations(req)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, inv := range resp.Invocations.Invocation {
		got = append(got, inv.InvokeId)
		if ct, err := time.Parse(time.RFC3339Nano, inv.CreationTime); err != nil || ct.Nanosecond() != 0 ||
			inv.CreationTime != resp.Invocations.Invocation[0].CreationTime {
			t.Errorf("CreationTime %q: want the same whole second for all (%v)", inv.CreationTime, err)
		}
	}
	// Eight ties come out in creation order, either way round, once in 20,160.
	if slices.Equal(got, reversed(older)) || slices.Equal(got, older) {
		t.Errorf("ties listed in creation order: %v", got)
	}
	if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(older))) {
		t.Fatalf("listing %v is not the invocations %v", got, older)
	}
	for range 3 {
		if again := f.all(50); !slices.Equal(again, got) {
			t.Fatalf("stable ties changed order: %v then %v", got, again)
		}
	}
	// A cursor pages through ties exactly, and a newer second comes first.
	f.clk.Add(time.Second)
	newer := f.run(2)
	paged := f.all(3)
	if !slices.Equal(paged[2:], got) || !slices.ContainsFunc(paged[:2], func(id string) bool { return id == newer[0] }) ||
		!slices.ContainsFunc(paged[:2], func(id string) bool { return id == newer[1] }) {
		t.Errorf("pages of 3 = %v, want the newer second %v then %v", paged, newer, got)
	}
	swasGot := f.swasIDs()
	if slices.Equal(swasGot, reversed(swasIDs)) || slices.Equal(swasGot, swasIDs) {
		t.Errorf("SWAS ties listed in creation order: %v", swasGot)
	}
	if again := f.swasIDs(); !slices.Equal(again, swasGot) {
		t.Errorf("SWAS stable ties changed order: %v then %v", swasGot, again)
	}
	// A look-up stays exact.
	req = ecs.CreateDescribeInvocationsRequest()
	req.InvokeId = older[3]
	if resp, err := f.ecs.DescribeInvocations(req); err != nil || len(resp.Invocations.Invocation) != 1 ||
		resp.Invocations.Invocation[0].InvokeId != older[3] {
		t.Errorf("look-up by InvokeId: %v %+v", err, resp)
	}
}

func TestUnstableOrderChangesBetweenIdenticalCalls(t *testing.T) {
	f := newBehaviourFixture(t, Behaviour{Unstable: true})
	ids := f.run(8)
	swasIDs := f.runSWAS(8)
	changed := func(list func() []string, want []string) bool {
		first := list()
		for range 50 { // the same order 50 times running: once in 40,320^50
			again := list()
			if !slices.Equal(slices.Sorted(slices.Values(again)), slices.Sorted(slices.Values(want))) {
				t.Fatalf("listing %v is not the invocations %v", again, want)
			}
			if !slices.Equal(again, first) {
				return true
			}
		}
		return false
	}
	if !changed(func() []string { return f.all(50) }, ids) {
		t.Error("DescribeInvocations kept its order over 50 identical calls")
	}
	if !changed(f.swasIDs, swasIDs) {
		t.Error("DescribeCommandInvocations kept its order over 50 identical calls")
	}
}

func TestDriftRepeatsARecordAfterAnArrival(t *testing.T) {
	f := newBehaviourFixture(t, Behaviour{Drift: true})
	ids := reversed(f.run(5)) // newest first
	first, tok := must[[]string](t, "page 1")(f.page(2, "", ""))
	rows, rtok := must[[]string](t, "results page 1")(f.resultsPage(2, "", ""))
	f.run(1)
	second, _ := must[[]string](t, "page 2")(f.page(2, tok, ""))
	if !slices.Equal(first, ids[:2]) || !slices.Equal(second, ids[1:3]) {
		t.Errorf("pages around an arrival = %v %v, want %v then %v (one repeated)", first, second, ids[:2], ids[1:3])
	}
	// Results rows drift too: two rows per invocation, one invocation arrived.
	rows2, _ := must[[]string](t, "results page 2")(f.resultsPage(2, rtok, ""))
	if !slices.Equal(rows2, rows) {
		t.Errorf("results pages around an arrival = %v %v, want the same rows twice", rows, rows2)
	}
}

func TestDriftSkipsARecordAfterAStatusChangeUnderAFilter(t *testing.T) {
	for _, tc := range []struct {
		b    Behaviour
		skip bool
	}{{Behaviour{}, false}, {Behaviour{Drift: true}, true}} {
		t.Run(tc.b.String(), func(t *testing.T) {
			f := newBehaviourFixture(t, tc.b)
			ids := reversed(f.run(5)) // all Pending, which InvokeStatus=Running lists
			first, tok := must[[]string](t, "page 1")(f.page(2, "", "Running"))
			stop := ecs.CreateStopInvocationRequest()
			stop.InvokeId = ids[0]
			if _, err := f.ecs.StopInvocation(stop); err != nil {
				t.Fatal(err)
			}
			second, _ := must[[]string](t, "page 2")(f.page(2, tok, "Running"))
			want := ids[2:4]
			if tc.skip {
				want = ids[3:5] // ids[2] moved to offset 1 and is never read
			}
			if !slices.Equal(first, ids[:2]) || !slices.Equal(second, want) {
				t.Errorf("pages around a stop = %v %v, want %v then %v", first, second, ids[:2], want)
			}
		})
	}
}

func TestDriftSkipsARecordAfterExpiry(t *testing.T) {
	f := newBehaviourFixture(t, Behaviour{Drift: true, Order: OrderOldest})
	ids := f.run(5)
	first, tok := must[[]string](t, "page 1")(f.page(2, "", ""))
	perInvocation := len(f.instances(ProductECS))                // retention counts execution records, one per instance
	if err := f.s.SetRetention(0, 4*perInvocation); err != nil { // the oldest expires
		t.Fatal(err)
	}
	second, _ := must[[]string](t, "page 2")(f.page(2, tok, ""))
	if !slices.Equal(first, ids[:2]) || !slices.Equal(second, ids[3:5]) {
		t.Errorf("pages around an expiry = %v %v, want %v then %v (%s skipped)", first, second, ids[:2], ids[3:5], ids[2])
	}
}

func TestTokenTTLRefusesAnOldToken(t *testing.T) {
	f := newBehaviourFixture(t, Behaviour{TokenTTL: Duration(5 * time.Second)})
	f.run(5)
	_, tok := must[[]string](t, "page 1")(f.page(2, "", ""))
	_, rtok := must[[]string](t, "results page 1")(f.resultsPage(2, "", ""))
	f.clk.Add(4 * time.Second)
	_, tok2 := must[[]string](t, "page 2 within the TTL")(f.page(2, tok, ""))
	f.clk.Add(2 * time.Second)
	_, _, err := f.page(2, tok, "")
	refused(t, "a token 6s old", err, "InvalidParameter.NextToken")
	_, _, err = f.resultsPage(2, rtok, "")
	refused(t, "a results token 6s old", err, "InvalidParameter.NextToken")
	if _, _, err := f.page(2, tok2, ""); err != nil {
		t.Errorf("a token 2s old was refused: %v", err)
	}
}

func TestTokenExpiresOnChange(t *testing.T) {
	f := newBehaviourFixture(t, Behaviour{TokenExpiresOnChange: true})
	f.run(5)
	_, tok := must[[]string](t, "page 1")(f.page(2, "", ""))
	_, rtok := must[[]string](t, "results page 1")(f.resultsPage(2, "", ""))
	_, tok2 := must[[]string](t, "page 2 of unchanged data")(f.page(2, tok, ""))
	f.run(1)
	_, _, err := f.page(2, tok2, "")
	refused(t, "a token after an arrival", err, "InvalidParameter.NextToken")
	_, _, err = f.resultsPage(2, rtok, "")
	refused(t, "a results token after an arrival", err, "InvalidParameter.NextToken")

	_, tok = must[[]string](t, "page 1 again")(f.page(2, "", ""))
	f.clk.Add(time.Second) // every run starts: statuses change
	_, _, err = f.page(2, tok, "")
	refused(t, "a token after status changes", err, "InvalidParameter.NextToken")
}

func TestStrictFiltersRefuseUndocumentedValues(t *testing.T) {
	f := newBehaviourFixture(t, Behaviour{StrictFilters: true})
	f.run(2)
	f.runSWAS(1)
	for _, status := range []string{"Running", "Finished", "Failed", "PartialFailed", "Stopped", "running"} {
		if _, _, err := f.page(10, "", status); err != nil {
			t.Errorf("InvokeStatus=%s refused: %v", status, err)
		}
	}
	if ids, _, _ := f.page(10, "", "Running"); len(ids) != 2 {
		t.Errorf("InvokeStatus=Running listed %v, want both pending invocations", ids)
	}
	for _, status := range []string{"Pending", "Stopping", "Scheduled", "Success", "Bogus"} {
		_, _, err := f.page(10, "", status)
		refused(t, "InvokeStatus="+status, err, "InvalidParameter.InvokeStatus")
	}
	for _, status := range []string{"Running", "Finished", "Success", "Stopping"} {
		if _, _, err := f.resultsPage(10, "", status); err != nil {
			t.Errorf("InvokeRecordStatus=%s refused: %v", status, err)
		}
	}
	_, _, err := f.resultsPage(10, "", "Pending")
	refused(t, "InvokeRecordStatus=Pending", err, "InvalidParameter.InvokeRecordStatus")
	for _, status := range []string{"Pending", "Running", "Stopping", "PartialFailed"} {
		if _, err := f.swasList(status); err != nil {
			t.Errorf("SWAS InvocationStatus=%s refused: %v", status, err)
		}
	}
	_, err = f.swasList("Finished")
	refused(t, "SWAS InvocationStatus=Finished", err, "InvalidParameter.InvocationStatus")

	if err := f.s.SetBehaviour(Behaviour{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.page(10, "", "Pending"); err != nil {
		t.Errorf("InvokeStatus=Pending refused once StrictFilters is off: %v", err)
	}
}

func TestBehaviourControlPlane(t *testing.T) {
	f := newBehaviourFixture(t, Behaviour{})
	do := func(method, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, f.base+"/_casim/behaviour", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if code, body := do(http.MethodGet, ""); code != 200 || body != "{}" {
		t.Errorf("GET of the zero behaviour: %d %s", code, body)
	}
	all := `{"order":"oldest","ties":true,"unstable":true,"drift":true,"tokenTTL":"5s","tokenExpiresOnChange":true,"strictFilters":true}`
	if code, body := do(http.MethodPost, all); code != 200 || body != all {
		t.Errorf("POST: %d %s", code, body)
	}
	want := Behaviour{Order: OrderOldest, Ties: true, Unstable: true, Drift: true, TokenTTL: Duration(5 * time.Second),
		TokenExpiresOnChange: true, StrictFilters: true}
	if got := f.s.Behaviour(); got != want {
		t.Errorf("after POST, Behaviour() = %+v", got)
	}
	if code, body := do(http.MethodGet, ""); code != 200 || body != all {
		t.Errorf("GET: %d %s", code, body)
	}
	// POST replaces the whole behaviour.
	if code, body := do(http.MethodPost, `{"drift":true}`); code != 200 || body != `{"drift":true}` {
		t.Errorf("POST drift: %d %s", code, body)
	}
	for _, bad := range []string{`{"order":"sideways"}`, `{"tokenTTL":"-1s"}`, `{"tokenTTL":"soon"}`, `{"drfit":true}`, `not json`} {
		if code, _ := do(http.MethodPost, bad); code != http.StatusBadRequest {
			t.Errorf("POST %s: %d, want 400", bad, code)
		}
	}
	if got := f.s.Behaviour(); got != (Behaviour{Drift: true}) {
		t.Errorf("a refused POST changed the behaviour: %+v", got)
	}
	if code, _ := do(http.MethodDelete, ""); code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE: %d, want 405", code)
	}
}

func TestBehaviourIsValidated(t *testing.T) {
	if _, err := New(Options{AccessKeyID: keyID, AccessKeySecret: secret, Behaviour: Behaviour{Order: "random"}}); err == nil {
		t.Error("New accepted an unknown order")
	}
	s, err := New(Options{AccessKeyID: keyID, AccessKeySecret: secret, Behaviour: Behaviour{Order: OrderNewest}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetBehaviour(Behaviour{Order: "oldest-first"}); err == nil {
		t.Error("SetBehaviour accepted an unknown order")
	}
	if err := s.SetBehaviour(Behaviour{TokenTTL: Duration(-time.Second)}); err == nil {
		t.Error("SetBehaviour accepted a negative TTL")
	}
	if got := s.Behaviour(); got != (Behaviour{Order: OrderNewest}) {
		t.Errorf("refused SetBehaviour changed it: %+v", got)
	}
	var wg sync.WaitGroup // safe for concurrent use (run with -race)
	for i := range 4 {
		wg.Go(func() {
			for j := range 50 {
				_ = s.SetBehaviour(RandomBehaviour(int64(i*100 + j)))
				_ = s.Behaviour()
				_ = s.arrangement(false)
			}
		})
	}
	wg.Wait()
}

func TestRandomBehaviourIsReproducibleAndMixesEverything(t *testing.T) {
	seen := map[string]bool{}
	for seed := range int64(64) {
		b := RandomBehaviour(seed)
		if b != RandomBehaviour(seed) {
			t.Fatalf("seed %d gave two behaviours", seed)
		}
		if err := b.Validate(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		for name, on := range map[string]bool{"oldest": b.Order == OrderOldest, "ties": b.Ties, "unstable": b.Unstable,
			"drift": b.Drift, "ttl": b.TokenTTL > 0, "change": b.TokenExpiresOnChange, "strict": b.StrictFilters} {
			seen[name+"="+map[bool]string{true: "on", false: "off"}[on]] = true
		}
	}
	if len(seen) != 14 {
		t.Errorf("64 seeds did not turn every behaviour both on and off: %v", seen)
	}
}

func TestDurationJSON(t *testing.T) {
	var b Behaviour
	if err := json.Unmarshal([]byte(`{"tokenTTL":"1m30s"}`), &b); err != nil || b.TokenTTL != Duration(90*time.Second) {
		t.Errorf("string: %v %v", b.TokenTTL, err)
	}
	if err := json.Unmarshal([]byte(`{"tokenTTL":2000000000}`), &b); err != nil || b.TokenTTL != Duration(2*time.Second) {
		t.Errorf("nanoseconds: %v %v", b.TokenTTL, err)
	}
	if out, _ := json.Marshal(Behaviour{TokenTTL: Duration(1500 * time.Millisecond)}); string(out) != `{"tokenTTL":"1.5s"}` {
		t.Errorf("marshal: %s", out)
	}
}
