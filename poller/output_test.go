package poller_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// countingProxy sits between the listers and the emulator and counts the
// calls of each action, and those that ask for output (IncludeOutput).
type countingProxy struct {
	mu     sync.Mutex
	calls  map[string]int
	output map[string]int
}

func newCountingProxy(t *testing.T, target string) (*countingProxy, string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	c := &countingProxy{calls: map[string]int{}, output: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		params := r.URL.Query()
		if form, err := url.ParseQuery(string(body)); err == nil {
			for k, v := range form {
				params[k] = append(params[k], v...)
			}
		}
		c.mu.Lock()
		c.calls[params.Get("Action")]++
		if strings.EqualFold(params.Get("IncludeOutput"), "true") {
			c.output[params.Get("Action")]++
		}
		c.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return c, srv.URL
}

func (c *countingProxy) reset() (calls, output map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	calls, output = c.calls, c.output
	c.calls, c.output = map[string]int{}, map[string]int{}
	return calls, output
}

// TestFailureEventsCarryTheirOutput runs failing commands that print
// distinct markers on each source, through the real SDK and a counting
// proxy, against real Redis and NATS: every Failed instance event
// carries its marker, a success carries nothing, secrets are redacted, a
// 36 KB output is announced cut with the API's Dropped, and output costs
// at most one call per failed invocation on ecs and none on the others.
func TestFailureEventsCarryTheirOutput(t *testing.T) {
	for _, source := range []string{"ecs", "ecs-results", "swas"} {
		t.Run(source, func(t *testing.T) {
			h := newHarness(t)
			proxy, proxyURL := newCountingProxy(t, h.simURL)
			opts := h.listerOptions(50)
			opts.Endpoint = proxyURL
			sh := shard
			instances := h.instances[:2]
			run := func(script string) string { return h.run(script, 0, instances...) }
			var lister poller.Lister
			var err error
			switch source {
			case "ecs":
				lister, err = cloudassist.NewECS(opts)
			case "ecs-results":
				lister, err = cloudassist.NewECSResults(opts)
			case "swas":
				sh = diff.Shard{Source: diff.SourceSWAS, Region: region}
				var swasID string
				for _, inst := range h.sim.Instances() {
					if inst.Product == castest.ProductSWAS {
						swasID = inst.ID
					}
				}
				instances = []string{swasID}
				run = func(script string) string { return h.swasRun(script, swasID) }
				lister, err = cloudassist.NewSWAS(opts)
			}
			if err != nil {
				t.Fatal(err)
			}
			p := h.poller(lister, h.store(), h.publisher(h.js), func(o *poller.Options) { o.Shard = sh })
			mustRunOnce(t, p) // the baseline

			failing := map[string]string{} // invocation -> its marker
			for i := range 3 {
				marker := fmt.Sprintf("marker-%s-%d", source, i)
				failing[run(fmt.Sprintf("echo starting; echo %s; exit %d", marker, 3+i))] = marker
			}
			success := run("echo all-is-well")
			secret := run("echo password=hunter2 key LTAI5tAbCdEfGhIjKlMnOp; exit 1")
			large := run("yes abcdefg | head -c 36864; exit 1")
			eventually(t, 10*time.Second, "every run to end", func() bool { return allFinal(truthByRecord(h.sim)) })

			proxy.reset()
			mustRunOnce(t, p)
			calls, output := proxy.reset()
			failedInvocations := len(failing) + 2 // the secret and the large one fail too
			switch source {
			case "ecs":
				if output["DescribeInvocations"] > failedInvocations || output["DescribeInvocations"] == 0 {
					t.Errorf("%d look-ups with IncludeOutput for %d failed invocations, want at most one each (calls %v)",
						output["DescribeInvocations"], failedInvocations, calls)
				}
			default:
				if len(output) != 0 {
					t.Errorf("output asked for %v: the rows carry it", output)
				}
			}

			seen := map[string]bool{}
			for _, e := range h.events() {
				d := e.Event.Data
				if d.Level != diff.LevelInstance || !d.Terminal {
					if d.Output != "" {
						t.Errorf("%s %s event carries output %q", d.Level, d.Status, d.Output)
					}
					continue
				}
				key := d.InvokeID + "/" + d.InstanceID
				seen[key] = true
				switch {
				case failing[d.InvokeID] != "":
					if d.Status != diff.StatusFailed || !strings.Contains(d.Output, failing[d.InvokeID]) || !strings.Contains(d.Output, "starting") {
						t.Errorf("%s: %s with output %q, want Failed with %q", key, d.Status, d.Output, failing[d.InvokeID])
					}
				case d.InvokeID == success:
					if d.Output != "" || d.OutputMissing {
						t.Errorf("%s: a success carries output %q (missing %v)", key, d.Output, d.OutputMissing)
					}
				case d.InvokeID == secret:
					if strings.Contains(d.Output, "hunter2") || strings.Contains(d.Output, "LTAI5tAbCdEfGhIjKlMnOp") ||
						!strings.Contains(d.Output, "password=[REDACTED]") {
						t.Errorf("%s: secrets not redacted: %q", key, d.Output)
					}
				case d.InvokeID == large:
					// SWAS documents no Dropped: the API's own cut is not said.
					if source != "swas" && d.OutputDropped != 36864-24*1024 {
						t.Errorf("%s: outputDropped %d, want the API's %d", key, d.OutputDropped, 36864-24*1024)
					}
					if len(d.Output) > cloudassist.DefaultOutputMaxBytes || !strings.HasPrefix(d.Output, "[cut ") ||
						!strings.HasSuffix(d.Output, "abcdefg\n") && !strings.HasSuffix(d.Output, "abc") ||
						!strings.Contains(strings.Join(d.Truncated, ","), "output") {
						t.Errorf("%s: output of %d bytes, truncated %v, starting %.40q: want its end, cut to %d bytes", key,
							len(d.Output), d.Truncated, d.Output, cloudassist.DefaultOutputMaxBytes)
					}
				}
			}
			for id := range failing {
				for _, inst := range instances {
					if !seen[id+"/"+inst] {
						t.Errorf("no final event for %s/%s", id, inst)
					}
				}
			}
		})
	}
}
