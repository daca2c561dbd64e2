package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/capoller/capoller/poller/sensitive"
)

// probe is a Kubernetes HTTP probe.
type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
	} `yaml:"httpGet"`
}

// deployNames is what deploy/ may name: capoller's settings (flags and
// their CAPOLLER_* variables), casim's flags, and every metric the code
// exposes.
type deployNames struct {
	flags, env, casim, metrics map[string]bool
}

func knownDeployNames(t *testing.T) deployNames {
	t.Helper()
	n := deployNames{flags: map[string]bool{"config": true}, env: map[string]bool{"CAPOLLER_CONFIG": true}, casim: map[string]bool{}, metrics: map[string]bool{}}
	for _, s := range settings() {
		n.flags[s.name], n.env[envName(s.name)] = true, true
	}
	out, _ := exec.Command("go", "run", "../casim", "-h").CombinedOutput() // -h exits 0 after printing the flags
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z][a-z-]*)`).FindAllStringSubmatch(string(out), -1) {
		n.casim[m[1]] = true
	}
	if len(n.casim) < 5 {
		t.Fatalf("casim -h listed %d flags:\n%s", len(n.casim), out)
	}
	metric := regexp.MustCompile(`"(capoller_[a-z_]+)"`)
	for _, dir := range []string{".", "../../poller", "../../poller/hintintake", "../../publisher/notify"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range metric.FindAllStringSubmatch(string(src), -1) {
				n.metrics[m[1]] = true
			}
		}
	}
	return n
}

// histogramOf is the histogram a series of name belongs to, if it is one
// of a histogram's (name_bucket, name_sum, name_count).
func histogramOf(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			return base
		}
	}
	return name
}

// checkArgs checks that every --flag of a command exists.
func checkArgs(t *testing.T, where string, args []string, known map[string]bool) {
	t.Helper()
	for _, a := range args {
		if name, ok := strings.CutPrefix(a, "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			if !known[name] {
				t.Errorf("%s: the flag --%s does not exist", where, name)
			}
		}
	}
}

func checkEnv(t *testing.T, where string, names []string, known map[string]bool) {
	t.Helper()
	for _, e := range names {
		if strings.HasPrefix(e, "CAPOLLER_") && !known[e] {
			t.Errorf("%s: the variable %s names no setting", where, e)
		}
	}
}

// The compose file, the Kubernetes manifests and the Grafana dashboard
// parse, and every flag, variable, configuration key and metric they name
// exists in the code.
func TestDeployNamesWhatExists(t *testing.T) {
	known := knownDeployNames(t)

	var compose struct {
		Services map[string]struct {
			Build       any               `yaml:"build"`
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Restart     string            `yaml:"restart"`
		} `yaml:"services"`
	}
	raw, err := os.ReadFile("../../deploy/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	replicas := 0
	for name, s := range compose.Services {
		if s.Restart == "" {
			t.Errorf("compose: %s has no restart policy", name)
		}
		switch {
		case len(s.Command) > 0 && s.Command[0] == "run":
			replicas++
			checkArgs(t, "compose "+name, s.Command, known.flags)
			env := slices.Collect(func(yield func(string) bool) {
				for k := range s.Environment {
					if !yield(k) {
						return
					}
				}
			})
			checkEnv(t, "compose "+name, env, known.env)
			cfg, err := loadConfig(flag.NewFlagSet(name, flag.ContinueOnError), s.Command[1:], func(k string) string { return s.Environment[k] })
			if err != nil {
				t.Errorf("compose %s: its configuration is refused: %v", name, err)
			} else if !strings.Contains(cfg.NATSURL, ",") || cfg.StreamReplicas != 3 {
				t.Errorf("compose %s: want the 3-node NATS cluster and an R3 stream, got %s, %d", name, sensitive.RedactURL(cfg.NATSURL), cfg.StreamReplicas)
			}
		case name == "casim":
			checkArgs(t, "compose casim", s.Command, known.casim)
		}
	}
	if replicas != 3 {
		t.Errorf("compose runs %d capoller replicas, want 3", replicas)
	}

	raw, err = os.ReadFile("../../deploy/kubernetes/capoller.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("kubernetes/capoller.yaml: %v", err)
		}
		kind, _ := doc["kind"].(string)
		kinds[kind] = true
		switch kind {
		case "ConfigMap":
			data, _ := doc["data"].(map[string]any)
			file := filepath.Join(t.TempDir(), "capoller.yaml")
			if err := os.WriteFile(file, []byte(data["capoller.yaml"].(string)), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := loadConfig(flag.NewFlagSet("cm", flag.ContinueOnError), []string{"--config", file}, func(string) string { return "" }); err != nil {
				t.Errorf("the ConfigMap's capoller.yaml is refused: %v", err)
			}
		case "Deployment":
			var d struct {
				Spec struct {
					Replicas int `yaml:"replicas"`
					Template struct {
						Spec struct {
							Containers []struct {
								Args []string `yaml:"args"`
								Env  []struct {
									Name string `yaml:"name"`
								} `yaml:"env"`
								LivenessProbe   probe `yaml:"livenessProbe"`
								ReadinessProbe  probe `yaml:"readinessProbe"`
								SecurityContext struct {
									ReadOnlyRootFilesystem   bool `yaml:"readOnlyRootFilesystem"`
									AllowPrivilegeEscalation bool `yaml:"allowPrivilegeEscalation"`
								} `yaml:"securityContext"`
								Resources struct {
									Requests, Limits map[string]string
								} `yaml:"resources"`
							} `yaml:"containers"`
						} `yaml:"spec"`
					} `yaml:"template"`
				} `yaml:"spec"`
			}
			b, _ := yaml.Marshal(doc)
			if err := yaml.Unmarshal(b, &d); err != nil {
				t.Fatal(err)
			}
			if d.Spec.Replicas != 3 || len(d.Spec.Template.Spec.Containers) != 1 {
				t.Fatalf("Deployment: %d replicas, %d containers", d.Spec.Replicas, len(d.Spec.Template.Spec.Containers))
			}
			c := d.Spec.Template.Spec.Containers[0]
			checkArgs(t, "Deployment", c.Args, known.flags)
			var env []string
			for _, e := range c.Env {
				env = append(env, e.Name)
			}
			checkEnv(t, "Deployment", env, known.env)
			mux := opsMux(newRegistry(), func() error { return nil }, func(context.Context) error { return nil })
			for _, path := range []string{c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path} {
				rec := httptest.NewRecorder()
				mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
				if path == "" || rec.Code != 200 {
					t.Errorf("Deployment: the probe %q answers %d", path, rec.Code)
				}
			}
			if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("Deployment: liveness on %q, readiness on %q", c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)
			}
			if !c.SecurityContext.ReadOnlyRootFilesystem || c.SecurityContext.AllowPrivilegeEscalation || c.Resources.Limits["memory"] == "" || c.Resources.Requests["cpu"] == "" {
				t.Errorf("Deployment: want a restricted security context, requests and limits: %+v %+v", c.SecurityContext, c.Resources)
			}
			if strings.Contains(string(raw), "pprof") {
				t.Error("the manifests expose the profiler")
			}
		}
	}
	for _, k := range []string{"ConfigMap", "Secret", "Deployment", "PodDisruptionBudget", "ServiceMonitor", "NetworkPolicy"} {
		if !kinds[k] {
			t.Errorf("the manifests have no %s", k)
		}
	}

	raw, err = os.ReadFile("../../deploy/grafana/capoller.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the dashboard: %v", err)
	}
	if len(dash.Panels) < 8 {
		t.Errorf("the dashboard has %d panels", len(dash.Panels))
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range regexp.MustCompile(`capoller_[a-z_]+`).FindAllString(tg.Expr, -1) {
				if !known.metrics[m] && !known.metrics[histogramOf(m)] {
					t.Errorf("dashboard panel %q: no metric %s", p.Title, m)
				}
			}
		}
	}
	example, _ := os.ReadFile("../../deploy/capoller.example.yaml")
	if strings.Contains(string(example), "pprof") {
		t.Error("the example configuration exposes the profiler")
	}
}
