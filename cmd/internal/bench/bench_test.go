package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestParseBehaviours(t *testing.T) {
	got, err := ParseBehaviours("ideal, worst")
	if err != nil || len(got) != 2 || got[0].Name != "ideal" || got[1].Name != "worst" || !got[1].Ties || !got[1].StrictFilters {
		t.Errorf("ideal, worst: %+v, %v", got, err)
	}
	if got, err := ParseBehaviours(`{"ties": true}`); err != nil || len(got) != 1 || !got[0].Ties {
		t.Errorf("JSON: %+v, %v", got, err)
	}
	for _, bad := range []string{"best", `{"ties": 3}`} {
		if _, err := ParseBehaviours(bad); err == nil || !strings.Contains(err.Error(), "behaviours") {
			t.Errorf("%s: %v, want an error naming behaviours", bad, err)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Options{Records: 1, Cycles: 1, Interval: time.Second, Window: time.Minute, Strategies: []string{"full", "incremental"}}
	if err := ok.Validate(); err != nil {
		t.Errorf("%+v: %v", ok, err)
	}
	for _, o := range []Options{
		{Records: 1, Cycles: 1, Interval: time.Second, Window: time.Minute, Strategies: []string{"fast"}},
		{Records: 0, Cycles: 1, Interval: time.Second, Window: time.Minute},
		{Records: 1, Cycles: 1, Interval: time.Second, Window: time.Minute, Active: 1.5},
		{Records: 1, Cycles: 1, Interval: time.Second, Window: time.Minute, QPS: -1},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
}

// The JSON report's keys keep the order the CLI has always printed them
// in: replicas, strategies, throughput (a null for each phase not run).
func TestReportJSON(t *testing.T) {
	var out bytes.Buffer
	if err := (Report{Throughput: &ThroughputReport{Rounds: 5}}).WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	r, st, tp := strings.Index(s, `"replicas": null`), strings.Index(s, `"strategies": null`), strings.Index(s, `"throughput": {`)
	if r < 0 || st < r || tp < st {
		t.Errorf("report:\n%s", s)
	}
}
