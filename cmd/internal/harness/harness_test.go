package harness

import (
	"os"
	"strings"
	"testing"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	if got := Percentile(xs, 0.5); got != 3 {
		t.Errorf("median of %v = %v", xs, got)
	}
	if got := Percentile(xs, 0.99); got != 5 {
		t.Errorf("p99 of %v = %v", xs, got)
	}
	if got := Percentile([]float64{1, 2, 3, 4}, 0.5); got != 3 {
		t.Errorf("median of an even count = %v, want the upper middle", got)
	}
	if got := Percentile(nil, 0.5); got != 0 {
		t.Errorf("no samples = %v", got)
	}
	if xs[0] != 5 {
		t.Errorf("Percentile sorted its input: %v", xs)
	}
}

// A lease owner names its replica by the --replica-id and a suffix: one
// replica's id that prefixes another's (chaos-1, chaos-10) does not match
// it.
func TestReplicaIndex(t *testing.T) {
	ids := []string{"chaos-1", "chaos-10"}
	for owner, want := range map[string]int{"chaos-1-1a2b3c": 0, "chaos-10-ffee": 1, "other-1-aa": -1, "chaos-1": -1} {
		i, ok := ReplicaIndex(ids, owner)
		if (want >= 0) != ok || (ok && i != want) {
			t.Errorf("ReplicaIndex(%q) = %d, %v; want %d", owner, i, ok, want)
		}
	}
}

// The two accounts' configuration names the variables env sets, and the
// emulator serves their key pairs.
func TestAccounts(t *testing.T) {
	a := NewAccounts("bench")
	regions := []string{"r1", "r2"}
	file, env, err := a.WriteConfig(t.TempDir(), regions)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"name: prod", "name: staging", "access_key_id_env: BENCH_PROD_AK", "access_key_secret_env: BENCH_STAGING_SK", "regions: [r1, r2]", "sources: [ecs, swas]"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("configuration lacks %q:\n%s", want, raw)
		}
	}
	o := a.Emulator(castest.Options{})
	vars := strings.Join(env, "\n")
	if !strings.Contains(vars, "BENCH_PROD_AK="+o.AccessKeyID) || !strings.Contains(vars, "BENCH_STAGING_SK="+o.Accounts[0].AccessKeySecret) ||
		!strings.HasPrefix(o.AccessKeyID, "LTAIbenchprod") || o.Accounts[0].Name != "staging" {
		t.Errorf("emulator %+v, environment %v", o, env)
	}
	shards := a.Shards(regions)
	if len(shards) != 8 || shards[0] != (diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "r1"}) ||
		shards[7] != (diff.Shard{Account: "staging", Source: diff.SourceSWAS, Region: "r2"}) {
		t.Errorf("shards %v", shards)
	}
}
