package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/testenv"
)

// TestOutputEndToEnd: failing runs print distinct markers on ecs,
// ecs-results and swas, polled by two `capoller run` deployments on one
// store (cn-hangzhou with ecs and swas, cn-shanghai with ecs-results);
// each Failed instance event carries its marker, and a generic webhook
// fed by `capoller notify` shows every marker.
func TestOutputEndToEnd(t *testing.T) {
	d := newDeployment(t, []string{"cn-hangzhou", "cn-shanghai"})
	d.start("hz", []string{"cn-hangzhou"}, "ecs,swas")
	d.start("sh", []string{"cn-shanghai"}, "ecs-results")

	var mu sync.Mutex
	var bodies []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(body))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	config := filepath.Join(t.TempDir(), "notify.yaml")
	yaml := fmt.Sprintf("group_window: 2s\nsettle: 200ms\nwebhooks: [{name: sink, kind: generic, url: %q}]\n", hook.URL)
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	natsURL := d.args[slices.Index(d.args, "--nats-url")+1]
	startNotify(t, "--config", config, "--nats-url", natsURL, "--stream", d.stream, "--subject-prefix", strings.ToLower(d.stream),
		"--durable", "output-e2e")

	acct := d.sim.Account(castest.DefaultAccount)
	fleet := acct.Fleet()
	markers := map[string]string{} // invocation -> its marker
	invoke := func(source, region string, swas bool) {
		marker := fmt.Sprintf("why-%s-%s-%d", source, region, time.Now().UnixNano())
		script := fmt.Sprintf("echo step one; echo %s; exit 4", marker)
		var id string
		var err error
		if swas {
			id, err = acct.InvokeSWAS(region, fleet[region][castest.ProductSWAS][:1], script, 5)
		} else {
			id, err = acct.Invoke(region, fleet[region][castest.ProductECS], script, 5)
		}
		if err != nil {
			t.Fatal(err)
		}
		markers[id] = marker
	}
	invoke("ecs", "cn-hangzhou", false)
	invoke("swas", "cn-hangzhou", true)
	invoke("ecs-results", "cn-shanghai", false)

	testenv.WaitFor(t, 60*time.Second, "every Failed instance event with its marker", func() error {
		found := map[string]int{}
		for _, e := range testenv.StreamEvents(t, d.js, d.stream) {
			if m := markers[e.Event.Data.InvokeID]; m != "" && e.Event.Data.InstanceID != "" && e.Event.Data.Status == "Failed" {
				if !strings.Contains(e.Event.Data.Output, m) {
					return fmt.Errorf("%s/%s failed with output %q, want %q", e.Event.Data.InvokeID, e.Event.Data.InstanceID, e.Event.Data.Output, m)
				}
				found[e.Event.Data.InvokeID]++
			}
		}
		if len(found) != len(markers) {
			return fmt.Errorf("failures announced for %d of %d invocations", len(found), len(markers))
		}
		return nil
	})
	testenv.WaitFor(t, 60*time.Second, "the webhook to show every marker", func() error {
		mu.Lock()
		all, n := strings.Join(bodies, "\n"), len(bodies)
		mu.Unlock()
		for id, m := range markers {
			if !strings.Contains(all, m) {
				return fmt.Errorf("no message shows %s's marker %s (%d messages)", id, m, n)
			}
		}
		return nil
	})
}
