package cloudassist

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/poller/testenv"
)

// fakeQuota is a shared quota that answers from a script and records what
// it was asked.
type fakeQuota struct {
	mu      sync.Mutex
	answers []fakeAnswer // the next answers; the last one repeats
	takes   []fakeTake
}

type fakeAnswer struct {
	wait time.Duration
	err  error
}

type fakeTake struct {
	key       string
	perSecond float64
	burst     int
	now       time.Time
}

func (f *fakeQuota) Take(_ context.Context, key string, perSecond float64, burst int, now time.Time) (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.takes = append(f.takes, fakeTake{key, perSecond, burst, now})
	a := f.answers[0]
	if len(f.answers) > 1 {
		f.answers = f.answers[1:]
	}
	return a.wait, a.err
}

func (f *fakeQuota) answer(a ...fakeAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers = a
}

func (f *fakeQuota) taken() []fakeTake {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeTake(nil), f.takes...)
}

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestLimitsSharedKeyAndRate(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	for _, tc := range []struct{ account, want string }{
		{"acct-1", "acct-1/cn-hangzhou/DescribeInvocations"},
		{"", "default/cn-hangzhou/DescribeInvocations"},
	} {
		quota := &fakeQuota{answers: []fakeAnswer{{}}}
		l, err := NewLimits(LimitsOptions{QPS: 20, Burst: 2, Account: tc.account, Shared: quota, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.wait(t.Context(), "cn-hangzhou", "DescribeInvocations"); err != nil {
			t.Fatal(err)
		}
		want := fakeTake{tc.want, 20, 2, clock.Now()}
		if got := quota.taken(); len(got) != 1 || got[0] != want {
			t.Fatalf("account %q: took %+v, want %+v", tc.account, got, want)
		}
	}
}

// TestLimitsSharedWaitIsProgress: a call the shared quota refuses waits as
// long as it says, as often as it says, and the wait is progress.
func TestLimitsSharedWaitIsProgress(t *testing.T) {
	quota := &fakeQuota{answers: []fakeAnswer{{wait: 20 * time.Millisecond}, {wait: 10 * time.Millisecond}, {}}}
	l, err := NewLimits(LimitsOptions{QPS: 1000, Shared: quota})
	if err != nil {
		t.Fatal(err)
	}
	var progress atomic.Int64
	ctx := WithProgress(t.Context(), func() { progress.Add(1) })
	start := time.Now()
	if err := l.wait(ctx, "r", "A"); err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < 30*time.Millisecond {
		t.Fatalf("admitted after %v, before the 30ms the quota asked", elapsed)
	}
	if n := len(quota.taken()); n != 3 {
		t.Fatalf("took %d times, want 3 (refused, refused, admitted)", n)
	}
	if n := progress.Load(); n < 4 { // each wait reports its start and end
		t.Fatalf("%d progress reports, want at least 4", n)
	}
}

// TestLimitsSharedCancelled: a context that ends while the shared quota
// makes the call wait ends the wait, and is no failure of the store.
func TestLimitsSharedCancelled(t *testing.T) {
	quota := &fakeQuota{answers: []fakeAnswer{{wait: time.Hour}}}
	var reports atomic.Int64
	l, err := NewLimits(LimitsOptions{Shared: quota, OnShared: func(error) { reports.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ctx = WithProgress(ctx, cancel) // cancelled as soon as the wait begins
	if err := l.wait(ctx, "r", "A"); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait: %v, want context.Canceled", err)
	}
	if n := reports.Load(); n != 0 {
		t.Fatalf("%d store failures reported for a cancelled wait", n)
	}
}

// TestLimitsSharedFailure: while the store fails, calls go on the local
// bucket alone, the store is tried again after a second, then two, four…,
// and OnShared hears of each change only — a failure, another cause,
// recovery.
func TestLimitsSharedFailure(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	down, other := errors.New("store down"), errors.New("store still down, otherwise")
	// The same cause, in the words of another quota's key: no news.
	downToo := fmt.Errorf("take a call from quota default/r2/B: %w", down)
	quota := &fakeQuota{answers: []fakeAnswer{{err: down}}}
	var mu sync.Mutex
	var reports []error
	l, err := NewLimits(LimitsOptions{QPS: 1000, Burst: 100, Shared: quota, Now: clock.Now, OnShared: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		reports = append(reports, err)
	}})
	if err != nil {
		t.Fatal(err)
	}
	calls := func(n int) {
		t.Helper()
		for range n {
			if err := l.wait(t.Context(), "r", "A"); err != nil {
				t.Fatalf("a failing store stopped a call: %v", err)
			}
		}
	}
	check := func(step string, takes int, want ...error) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if n := len(quota.taken()); n != takes {
			t.Fatalf("%s: the store was asked %d times, want %d", step, n, takes)
		}
		if len(reports) != len(want) {
			t.Fatalf("%s: reported %v, want %v", step, reports, want)
		}
		for i := range want {
			if !errors.Is(reports[i], want[i]) {
				t.Fatalf("%s: reported %v, want %v", step, reports, want)
			}
		}
	}
	calls(5)
	check("store down", 1, down)
	clock.Add(999 * time.Millisecond)
	calls(5)
	check("within the second after", 1, down)
	clock.Add(time.Millisecond)
	calls(5)
	quota.answer(fakeAnswer{err: downToo})
	calls(5)
	check("a second later, the same cause", 2, down)
	quota.answer(fakeAnswer{err: other})
	clock.Add(2*time.Second - time.Millisecond)
	calls(5)
	check("within two seconds after", 2, down)
	clock.Add(time.Millisecond)
	calls(5)
	check("two seconds later, another error", 3, down, other)
	quota.answer(fakeAnswer{})
	clock.Add(4 * time.Second)
	calls(5)
	check("four seconds later, recovered", 8, down, other, nil)
	quota.answer(fakeAnswer{err: down})
	calls(1)
	clock.Add(time.Second)
	calls(1)
	check("down again: the pause starts over at a second", 10, down, other, nil, down)
}

// sharedStores opens n stores on one shared place (a Redis key prefix, a
// KV bucket), each on its own connection: n replicas.
func sharedStores(t *testing.T, kind string, n int) []SharedQuota {
	t.Helper()
	var stores []SharedQuota
	switch kind {
	case "redis":
		first, prefix := testenv.Redis(t)
		for i := range n {
			client := first
			if i > 0 {
				client = redis.NewClient(first.Options()) // the same server: testenv.Redis may start one per call
				t.Cleanup(func() { _ = client.Close() })
			}
			s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			stores = append(stores, s)
		}
	case "natskv":
		bucket := testenv.Name("CAPOLLER_QUOTA")
		url := testenv.NATSURL(t)
		for i := range n {
			var names []string
			if i == 0 {
				names = []string{bucket}
			}
			_, js := testenv.NATS(t, url, names...)
			s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
			if err != nil {
				t.Fatal(err)
			}
			stores = append(stores, s)
		}
	}
	return stores
}

// TestLimitsSharedReplicas: two replicas' Limits, each at QPS 20 on its
// own, called concurrently for a second through one store, admit no more
// than 20 a second together (where each alone would admit 20).
func TestLimitsSharedReplicas(t *testing.T) {
	const qps, burst = 20, 1
	for _, kind := range []string{"redis", "natskv"} {
		t.Run(kind, func(t *testing.T) {
			var replicas []*Limits
			for _, s := range sharedStores(t, kind, 2) {
				l, err := NewLimits(LimitsOptions{QPS: qps, Burst: burst, Account: "acct", Shared: s,
					OnShared: func(err error) { t.Errorf("the store failed: %v", err) }})
				if err != nil {
					t.Fatal(err)
				}
				replicas = append(replicas, l)
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			var admitted atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for i := range 6 { // three listers per replica
				wg.Go(func() {
					for l := replicas[i%2]; l.wait(ctx, "cn-hangzhou", "DescribeInvocations") == nil; {
						admitted.Add(1)
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			most := int64(qps*elapsed.Seconds()) + burst + 2 // +2: the clocks of the measure and the store differ by a hair
			n := admitted.Load()
			t.Logf("%d calls admitted in %v", n, elapsed)
			if n > most {
				t.Fatalf("%d calls admitted in %v, more than %d: the replicas did not share the quota", n, elapsed, most)
			}
			if n < qps/2 {
				t.Fatalf("only %d calls admitted in %v: the quota starves its replicas", n, elapsed)
			}
		})
	}
}

// TestLimitsSharedStoreDown: with the store unreachable, calls go at the
// local rate, and the failure is reported once.
func TestLimitsSharedStoreDown(t *testing.T) {
	const qps, calls = 50, 10
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer func() { _ = client.Close() }()
	store, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var reports []error
	var mu sync.Mutex
	l, err := NewLimits(LimitsOptions{QPS: qps, Shared: store, OnShared: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		reports = append(reports, err)
	}})
	if err != nil {
		t.Fatal(err)
	}
	call := func() {
		t.Helper()
		if err := l.wait(t.Context(), "r", "A"); err != nil {
			t.Fatalf("a store that is down stopped a call: %v", err)
		}
	}
	start := time.Now()
	call() // tries the store, fails
	if first := time.Since(start); first > sharedTimeout+time.Second/2 {
		t.Fatalf("the call that met the failing store took %v", first)
	}
	start = time.Now()
	for range calls - 1 { // within the pause: the local bucket alone
		call()
	}
	elapsed := time.Since(start)
	if least := time.Duration(calls-2) * time.Second / qps; elapsed < least*9/10 || elapsed > sharedRetryMin {
		t.Fatalf("%d calls in %v, want about %v: the local rate", calls-1, elapsed, least)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 1 || reports[0] == nil {
		t.Fatalf("reported %v, want the one failure", reports)
	}
	t.Logf("%d calls in %v; reported: %v", calls, elapsed, reports[0])
}
