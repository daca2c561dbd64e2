package checkpoint

import (
	"context"
	"encoding/hex"
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/poller/testenv"
)

// quotaT0 is the instant scripted sequences start from.
func quotaT0() time.Time { return time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC) }

// take is one call of a scripted sequence: at quotaT0()+at, the quota should
// admit it (wait 0) or refuse it with exactly wait.
type take struct {
	at, wait time.Duration
}

func TestGCRA(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		name  string
		burst int
		takes []take
	}{
		{"burst 1: one call per interval, idle time is not saved up", 1, []take{
			{0, 0}, {0, 100 * ms}, {50 * ms, 50 * ms}, {100 * ms, 0}, {199 * ms, ms}, {200 * ms, 0},
			{1000 * ms, 0}, {1001 * ms, 99 * ms}, {1100 * ms, 0},
		}},
		{"burst 3: three at once, then the interval; a pause refills", 3, []take{
			{0, 0}, {0, 0}, {0, 0}, {0, 100 * ms}, {100 * ms, 0}, {100 * ms, 100 * ms},
			{250 * ms, 0}, {250 * ms, 50 * ms}, {600 * ms, 0}, {600 * ms, 0}, {600 * ms, 0}, {600 * ms, 100 * ms},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tat time.Time
			for i, c := range tc.takes {
				next, wait := gcra(tat, quotaT0().Add(c.at), 100*ms, tc.burst)
				if wait != c.wait {
					t.Fatalf("take %d at +%v: wait %v, want %v", i, c.at, wait, c.wait)
				}
				if wait == 0 {
					tat = next
				} else if !next.Equal(tat) {
					t.Fatalf("take %d at +%v: refused, but moved the TAT from %v to %v", i, c.at, tat, next)
				}
			}
		})
	}
}

func TestQuotaRates(t *testing.T) {
	for _, tc := range []struct {
		perSecond float64
		burst     int
		interval  time.Duration
	}{
		{10, 1, 100 * time.Millisecond},
		{20, 5, 50 * time.Millisecond},
		{1.0 / 7, 1, 7 * time.Second},
		{3, 1, 333333333 * time.Nanosecond},
		{0.5, 2, 2 * time.Second},
		{1e12, 1, time.Nanosecond}, // faster than a nanosecond rounds up to one
	} {
		limit, err := redisRateLimit(tc.perSecond, tc.burst)
		if err != nil {
			t.Fatalf("%v/s: %v", tc.perSecond, err)
		}
		if limit.Rate != 1 || limit.Period != tc.interval || limit.Burst != tc.burst {
			t.Errorf("%v/s burst %d: %+v, want 1 per %v, burst %d", tc.perSecond, tc.burst, limit, tc.interval, tc.burst)
		}
	}
	for _, bad := range []struct {
		perSecond float64
		burst     int
	}{{0, 1}, {-1, 1}, {math.NaN(), 1}, {math.Inf(1), 1}, {10, 0}, {10, -1}, {1e-12, 1}} {
		if _, err := quotaInterval(bad.perSecond, bad.burst); err == nil {
			t.Errorf("%v/s burst %d: accepted", bad.perSecond, bad.burst)
		}
	}
}

// unescapeQuotaKey inverts kvQuotaKey, to show that it loses nothing.
func unescapeQuotaKey(t *testing.T, name string) string {
	t.Helper()
	rest, ok := strings.CutPrefix(name, "quota.")
	if !ok {
		t.Fatalf("%q: no quota. prefix", name)
	}
	var b strings.Builder
	for i := 0; i < len(rest); i++ {
		if rest[i] != '_' {
			b.WriteByte(rest[i])
			continue
		}
		c, err := hex.DecodeString(rest[i+1 : i+3])
		if err != nil {
			t.Fatalf("%q: bad escape at %d", name, i)
		}
		b.Write(c)
		i += 2
	}
	return b.String()
}

func TestKVQuotaKey(t *testing.T) {
	valid := regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`) // nats.go's rule for keys
	keys := []string{
		"default/cn-hangzhou/DescribeInvocations", "acct.1/cn-hangzhou/A", "acct_1/cn-hangzhou/A",
		"acct_2E1/cn-hangzhou/A", "..", ".", "a b", "a=b", "账号/区域/API", "a\x00b", "_", "__", "/",
	}
	seen := map[string]string{}
	for _, k := range keys {
		name, err := kvQuotaKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if !valid.MatchString(name) || strings.Contains(name, "..") || strings.HasSuffix(name, ".") {
			t.Errorf("%q -> %q: not a valid key", k, name)
		}
		if back := unescapeQuotaKey(t, name); back != k {
			t.Errorf("%q -> %q -> %q", k, name, back)
		}
		if other, dup := seen[name]; dup {
			t.Errorf("%q and %q share %q", k, other, name)
		}
		seen[name] = k
	}
	if got, _ := kvQuotaKey("default/cn-hangzhou/DescribeInvocations"); got != "quota.default/cn-hangzhou/DescribeInvocations" {
		t.Errorf("a plain key is escaped: %q", got)
	}
	if _, err := kvQuotaKey(""); err == nil {
		t.Error("an empty key is accepted")
	}
}

// openKV opens n KV stores on one bucket, each on its own connection: n
// replicas.
func openKV(t *testing.T, n int) []*KV {
	t.Helper()
	bucket := testenv.Name("CAPOLLER_QUOTA")
	url := testenv.NATSURL(t)
	var stores []*KV
	for i := range n {
		names := []string{}
		if i == 0 {
			names = append(names, bucket) // one cleanup is enough
		}
		_, js := testenv.NATS(t, url, names...)
		s, err := NewKV(t.Context(), js, KVOptions{Bucket: bucket})
		if err != nil {
			t.Fatal(err)
		}
		stores = append(stores, s)
	}
	return stores
}

// openRedis opens n Redis stores on one key prefix, each on its own
// client: n replicas.
func openRedis(t *testing.T, n int) ([]*Redis, *redis.Client) {
	t.Helper()
	first, prefix := testenv.Redis(t)
	clients := []*redis.Client{first}
	for range n - 1 { // another client of the same server: testenv.Redis may start a server per call
		c := redis.NewClient(first.Options())
		t.Cleanup(func() { _ = c.Close() })
		clients = append(clients, c)
	}
	var stores []*Redis
	for _, c := range clients {
		s, err := NewRedis(c, RedisOptions{KeyPrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		stores = append(stores, s)
	}
	t.Cleanup(func() { // redis_rate's keys start with "rate:", outside the prefix testenv cleans
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for iter := first.Scan(ctx, 0, "rate:"+prefix+"*", 1000).Iterator(); iter.Next(ctx); {
			first.Del(ctx, iter.Val())
		}
	})
	return stores, first
}

// TestKVTakeScripted plays a sequence at chosen instants through two
// replicas of one KV quota: they are limited together, exactly as gcra
// says, and another key is not.
func TestKVTakeScripted(t *testing.T) {
	const ms = time.Millisecond
	replicas := openKV(t, 2)
	ctx := t.Context()
	for i, c := range []struct {
		replica int
		key     string
		take
	}{
		{0, "a/r/X", take{0, 0}},
		{1, "a/r/X", take{0, 100 * ms}},
		{0, "a/r/X", take{40 * ms, 60 * ms}},
		{1, "a/r/Y", take{40 * ms, 0}}, // another API's quota
		{1, "a/r/X", take{100 * ms, 0}},
		{0, "a/r/X", take{150 * ms, 50 * ms}},
		{0, "a/r/X", take{200 * ms, 0}},
		{1, "a/r/X", take{200 * ms, 100 * ms}},
		{1, "a/r/X", take{1 * time.Second, 0}}, // idle time is not saved up: burst 1
		{0, "a/r/X", take{1*time.Second + ms, 99 * ms}},
	} {
		wait, err := replicas[c.replica].Take(ctx, c.key, 10, 1, quotaT0().Add(c.at))
		if err != nil {
			t.Fatal(err)
		}
		if wait != c.wait {
			t.Fatalf("take %d (replica %d, %s at +%v): wait %v, want %v", i, c.replica, c.key, c.at, wait, c.wait)
		}
	}
}

// TestKVTakeConcurrent races replicas on one instant: their
// compare-and-sets conflict, and exactly the burst is admitted.
func TestKVTakeConcurrent(t *testing.T) {
	replicas := openKV(t, 2)
	var mu sync.Mutex
	admitted := 0
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			wait, err := replicas[i%2].Take(t.Context(), "a/r/X", 10, 3, quotaT0())
			if err != nil {
				t.Error(err)
				return
			}
			if wait == 0 {
				mu.Lock()
				admitted++
				mu.Unlock()
			} else if wait > 300*time.Millisecond {
				t.Errorf("refused with wait %v, past the 3 intervals the burst holds", wait)
			}
		})
	}
	wg.Wait()
	if admitted != 3 {
		t.Fatalf("%d calls admitted at one instant, want the burst, 3", admitted)
	}
}

// TestKVTakeUnreadable: a value that is no time counts as an idle quota
// and is overwritten, rather than blocking the quota for good.
func TestKVTakeUnreadable(t *testing.T) {
	s := openKV(t, 1)[0]
	name, _ := kvQuotaKey("a/r/X")
	if _, err := s.kv.Put(t.Context(), name, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	for i, want := range []time.Duration{0, 100 * time.Millisecond} {
		if wait, err := s.Take(t.Context(), "a/r/X", 10, 1, quotaT0()); err != nil || wait != want {
			t.Fatalf("take %d: wait %v, %v; want %v", i, wait, err, want)
		}
	}
}

// TestRedisTakeReplicas: two replicas of one Redis quota are limited
// together, another key is not, and a refused call is admitted once it
// has waited what it was told. The clock is Redis's own (redis_rate reads
// TIME), so the instants are real ones, and now is ignored.
func TestRedisTakeReplicas(t *testing.T) {
	replicas, _ := openRedis(t, 2)
	ctx := t.Context()
	must := func(s *Redis, key string) time.Duration {
		t.Helper()
		wait, err := s.Take(ctx, key, 10, 1, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return wait
	}
	start := time.Now()
	if wait := must(replicas[0], "a/r/X"); wait != 0 {
		t.Fatalf("first call refused: wait %v", wait)
	}
	wait := must(replicas[1], "a/r/X")
	if elapsed := time.Since(start); elapsed < 90*time.Millisecond && (wait <= 0 || wait > 100*time.Millisecond) {
		t.Fatalf("the other replica's call %v after the first: wait %v, want up to 100ms", elapsed, wait)
	}
	if w := must(replicas[1], "a/r/Y"); w != 0 {
		t.Fatalf("another API's quota refused: wait %v", w)
	}
	for range 3 { // waiting what it is told admits it (the clock may make it wait again once, by a hair)
		if wait == 0 {
			break
		}
		time.Sleep(wait)
		wait = must(replicas[1], "a/r/X")
	}
	if wait != 0 {
		t.Fatalf("still refused after waiting: %v", wait)
	}
}

// TestRedisTakeConcurrent races replicas: the burst goes at once, and no
// more than the rate admits while they race.
func TestRedisTakeConcurrent(t *testing.T) {
	replicas, _ := openRedis(t, 2)
	var mu sync.Mutex
	admitted := 0
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 16 {
		wg.Go(func() {
			wait, err := replicas[i%2].Take(t.Context(), "a/r/X", 10, 3, time.Time{})
			if err != nil {
				t.Error(err)
				return
			}
			if wait == 0 {
				mu.Lock()
				admitted++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if most := 3 + int(time.Since(start)/(100*time.Millisecond)); admitted < 3 || admitted > most {
		t.Fatalf("%d calls admitted, want 3 to %d", admitted, most)
	}
}

// TestRedisTakeMatchesGCRA checks gcra, the KV's algorithm, against
// redis_rate's script on a real server: for each call of a quick sequence,
// it reads the server's clock before and after the call and the TAT the
// script stored, and gcra, given the TAT before, must decide the call as
// Redis did at some instant in between — admit or refuse, the wait, and
// the TAT stored. (Calls where the boundary falls between the two clock
// readings are only counted.) The interval is 1ms, so that calls a few
// hundred microseconds apart meet both admits and refusals.
func TestRedisTakeMatchesGCRA(t *testing.T) {
	const (
		perSecond = 1000
		burst     = 3
		interval  = time.Millisecond
		slack     = 2 * time.Microsecond // the script's float seconds since 2017
	)
	replicas, client := openRedis(t, 1)
	s, ctx := replicas[0], t.Context()
	jan2017 := time.Unix(1483228800, 0)
	storedTAT := func() time.Time {
		v, err := client.Get(ctx, "rate:"+s.quotaKey("a/r/X")).Result()
		if errors.Is(err, redis.Nil) {
			return time.Time{}
		}
		if err != nil {
			t.Fatal(err)
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("redis_rate's TAT %q: %v", v, err)
		}
		return jan2017.Add(time.Duration(f * float64(time.Second)))
	}
	near := func(a, b time.Time) bool { return a.Sub(b).Abs() <= slack }
	tat := time.Time{}
	admits, refusals, ambiguous := 0, 0, 0
	// Under load, a call's two clock readings can lie a millisecond apart,
	// and the call is then on a boundary (ambiguous): go on until enough
	// were decisive, within a bound.
	const enough, most = 20, 4000
	i := 0
	for ; i < most && (admits < enough || refusals < enough); i++ {
		if i%20 == 19 {
			time.Sleep(4 * interval) // refill the burst now and then
		}
		before, err := client.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		wait, err := s.Take(ctx, "a/r/X", perSecond, burst, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		after, err := client.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		stored := storedTAT()
		nextBefore, waitBefore := gcra(tat, before, interval, burst)
		nextAfter, waitAfter := gcra(tat, after, interval, burst)
		switch {
		case (waitBefore == 0) != (waitAfter == 0):
			ambiguous++
		case waitBefore == 0:
			admits++
			if wait != 0 {
				t.Fatalf("call %d: redis refused (wait %v) what gcra admits", i, wait)
			}
			if stored.Before(nextBefore.Add(-slack)) || stored.After(nextAfter.Add(slack)) {
				t.Fatalf("call %d: redis stored TAT %v, gcra between %v and %v", i, stored, nextBefore, nextAfter)
			}
		default:
			refusals++
			if wait == 0 {
				t.Fatalf("call %d: redis admitted what gcra refuses (wait %v to %v)", i, waitAfter, waitBefore)
			}
			if wait < waitAfter-slack || wait > waitBefore+slack {
				t.Fatalf("call %d: redis wait %v, gcra between %v and %v", i, wait, waitAfter, waitBefore)
			}
			if !near(stored, tat) {
				t.Fatalf("call %d: refused, but redis moved the TAT from %v to %v", i, tat, stored)
			}
		}
		tat = stored
	}
	t.Logf("%d admitted, %d refused, %d on a boundary between two clock readings", admits, refusals, ambiguous)
	if admits < enough || refusals < enough {
		t.Fatalf("the sequence tested too little in %d calls: %d admitted, %d refused, %d ambiguous", i, admits, refusals, ambiguous)
	}
}
