package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"gopkg.in/yaml.v3"

	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher/notify"
)

const chartDir = "../../deploy/helm/capoller"

// helmRelease is the release name the tests render the chart as.
const helmRelease = "ops"

// helmBinary is the helm named by CAPOLLER_HELM, which must then exist
// (.ci/run builds it and names it, after the main test run), or else helm
// on PATH or in $(go env GOPATH)/bin; without one the test is skipped,
// saying how to install it.
func helmBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CAPOLLER_HELM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("CAPOLLER_HELM: %v", err)
		}
		return p
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "helm")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("helm is neither on PATH nor in $(go env GOPATH)/bin: install it with `go install helm.sh/helm/v4/cmd/helm@v4.3.2`, as .ci/run does")
	return ""
}

// helmTemplate renders the chart with args (-f, --set) and returns its
// output, or helm's error output.
func helmTemplate(t *testing.T, helm string, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helm, append([]string{"template", helmRelease, chartDir, "--namespace", "capoller"}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("helm template %v: %w: %s", args, err, stderr.String())
	}
	return stdout.String(), nil
}

// manifest is one rendered object: its kind, name and labels, and the
// whole of it to decode as the checks need.
type manifest struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	node *yaml.Node
}

func (m manifest) String() string { return m.Kind + " " + m.Metadata.Name }

func (m manifest) decode(t *testing.T, v any) {
	t.Helper()
	if err := m.node.Decode(v); err != nil {
		t.Fatalf("%s: %v", m, err)
	}
}

// rendered is the chart's output, by kind.
type rendered map[string][]manifest

func parseRendered(t *testing.T, out string) rendered {
	t.Helper()
	r := rendered{}
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var node yaml.Node
		if err := dec.Decode(&node); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("the rendered chart is not YAML: %v", err)
		}
		if len(node.Content) == 0 || node.Content[0].Kind != yaml.MappingNode {
			continue // an empty document
		}
		m := manifest{node: &node}
		if err := node.Decode(&m); err != nil {
			t.Fatal(err)
		}
		r[m.Kind] = append(r[m.Kind], m)
	}
	return r
}

// one is the object of kind whose name ends with suffix.
func (r rendered) one(t *testing.T, kind, suffix string) manifest {
	t.Helper()
	for _, m := range r[kind] {
		if strings.HasSuffix(m.Metadata.Name, suffix) {
			return m
		}
	}
	t.Fatalf("no %s named *%s among %v", kind, suffix, r[kind])
	return manifest{}
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom any    `yaml:"valueFrom"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Args    []string `yaml:"args"`
	Env     []envVar `yaml:"env"`
	EnvFrom []struct {
		SecretRef struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	LivenessProbe   *probe `yaml:"livenessProbe"`
	ReadinessProbe  *probe `yaml:"readinessProbe"`
	SecurityContext struct {
		ReadOnlyRootFilesystem   bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation bool `yaml:"allowPrivilegeEscalation"`
	} `yaml:"securityContext"`
	Resources struct {
		Requests, Limits map[string]string
	} `yaml:"resources"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

func (c k8sContainer) port(name string) int {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func (c k8sContainer) env(name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

type keyPath struct {
	Key  string `yaml:"key"`
	Path string `yaml:"path"`
}

type k8sDeployment struct {
	Spec struct {
		Replicas int `yaml:"replicas"`
		Strategy struct {
			Type string `yaml:"type"`
		} `yaml:"strategy"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				SecurityContext struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
					FSGroup      int  `yaml:"fsGroup"`
				} `yaml:"securityContext"`
				Containers []k8sContainer `yaml:"containers"`
				Volumes    []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string    `yaml:"secretName"`
						Items      []keyPath `yaml:"items"`
					} `yaml:"secret"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func (d k8sDeployment) container(t *testing.T) k8sContainer {
	t.Helper()
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("%d containers, want 1", n)
	}
	return d.Spec.Template.Spec.Containers[0]
}

// selects reports whether a selector's labels are all among labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// fakeCreds is a NATS creds file: a user JWT its account signed, and the
// user's seed.
func fakeCreds(t *testing.T) string {
	t.Helper()
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := user.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	token, err := jwt.NewUserClaims(pub).Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	return string(creds)
}

// secretContent is what a Secret's file named by setting (a variable or a
// YAML key) holds, such that the setting accepts it: a creds file, a PEM
// certificate matching its key, a token.
func secretContent(t *testing.T, p testenv.PKI, setting string) string {
	t.Helper()
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	s := strings.ToUpper(setting)
	switch {
	case strings.HasSuffix(s, "_CREDS"):
		return fakeCreds(t)
	case strings.HasSuffix(s, "_CA"):
		return read(p.CA)
	case s == "CAPOLLER_HINTS_TLS_CERT":
		return read(p.ServerCert)
	case s == "CAPOLLER_HINTS_TLS_KEY":
		return read(p.ServerKey)
	case strings.HasSuffix(s, "_CERT"):
		return read(p.ClientCert)
	case strings.HasSuffix(s, "_KEY"):
		return read(p.ClientKey)
	case s == "URL_FILE":
		return "https://hooks.slack.com/services/T0/B0/fake\n"
	case s == "ACCESS_KEY_ID_FILE":
		return "LTAI5tFakeKeyId\n"
	}
	return "fake-S3cret\n"
}

// podFiles is a pod's volumes laid out under root: the files it mounts,
// each named by a setting, with content that setting accepts.
type podFiles struct {
	root   string
	mounts map[string]string // mount path → volume
	// files are the mounted files' paths in the pod; dirs the Secrets
	// mounted whole, whose keys the test cannot list.
	files map[string]bool
	dirs  []string
}

// layPod mounts d's volumes under a new root: the ConfigMaps' keys as
// they are (their secrets' paths moved under root), and each Secret's
// items, to be written by name.
func layPod(t *testing.T, r rendered, d k8sDeployment) *podFiles {
	t.Helper()
	c := d.container(t)
	pf := &podFiles{root: t.TempDir(), mounts: map[string]string{}, files: map[string]bool{}}
	for _, m := range c.VolumeMounts {
		pf.mounts[m.MountPath] = m.Name
	}
	mountOf := func(volume string) string {
		for p, v := range pf.mounts {
			if v == volume {
				return p
			}
		}
		t.Fatalf("the volume %s is mounted nowhere", volume)
		return ""
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		dir := mountOf(v.Name)
		switch {
		case v.Secret != nil && len(v.Secret.Items) == 0:
			pf.dirs = append(pf.dirs, dir)
		case v.Secret != nil:
			for _, it := range v.Secret.Items {
				pf.files[filepath.Join(dir, it.Path)] = true
			}
		case v.ConfigMap != nil:
			var cm struct {
				Data map[string]string `yaml:"data"`
			}
			r.one(t, "ConfigMap", v.ConfigMap.Name).decode(t, &cm)
			for k := range cm.Data {
				pf.files[filepath.Join(dir, k)] = true
			}
		}
	}
	return pf
}

// mounted reports whether the pod has a file at path.
func (pf *podFiles) mounted(path string) bool {
	if pf.files[path] {
		return true
	}
	return slices.ContainsFunc(pf.dirs, func(d string) bool { return strings.HasPrefix(path, d+"/") })
}

// write writes a mounted file, named by setting, under root.
func (pf *podFiles) write(t *testing.T, where, setting, path, content string) {
	t.Helper()
	if !filepath.IsAbs(path) || !pf.mounted(path) {
		t.Errorf("%s: %s names %s, which no volume of the pod mounts", where, setting, path)
		return
	}
	full := filepath.Join(pf.root, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rooted moves the pod's paths in s under root.
func (pf *podFiles) rooted(s string) string {
	for dir := range pf.mounts {
		s = strings.ReplaceAll(s, dir+"/", filepath.Join(pf.root, dir)+"/")
	}
	return s
}

// fileSettings are the YAML keys of a configuration that name a file
// (*_file), with their paths.
func fileSettings(node any, out map[string]string) {
	switch v := node.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && strings.HasSuffix(k, "_file") {
				out[s] = k
			}
			fileSettings(x, out)
		}
	case []any:
		for _, x := range v {
			fileSettings(x, out)
		}
	}
}

// layFiles writes the files of a pod: its ConfigMaps' (with paths rooted)
// and, for each setting naming a mounted Secret's file, that file. A
// Secret's item no setting names is an error: a mount for nothing, or a
// setting the chart forgot.
func (pf *podFiles) layFiles(t *testing.T, r rendered, d k8sDeployment, where string, p testenv.PKI) {
	t.Helper()
	c := d.container(t)
	named := map[string]string{} // path → setting
	for _, e := range c.Env {
		if strings.HasPrefix(e.Value, "/") {
			named[e.Value] = e.Name
		}
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.ConfigMap == nil {
			continue
		}
		var cm struct {
			Data map[string]string `yaml:"data"`
		}
		r.one(t, "ConfigMap", v.ConfigMap.Name).decode(t, &cm)
		for _, dir := range slices.Collect(func(yield func(string) bool) {
			for p, vol := range pf.mounts {
				if vol == v.Name && !yield(p) {
					return
				}
			}
		}) {
			for k, text := range cm.Data {
				var doc any
				if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
					t.Fatalf("%s: ConfigMap %s, %s: %v", where, v.ConfigMap.Name, k, err)
				}
				fileSettings(doc, named)
				full := filepath.Join(pf.root, dir, k)
				if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(pf.rooted(text)), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for path, setting := range named {
		pf.write(t, where, setting, path, secretContent(t, p, setting))
	}
	for path := range pf.files {
		if _, err := os.Stat(filepath.Join(pf.root, path)); err != nil {
			t.Errorf("%s: %s is mounted from a Secret, and no setting reads it", where, path)
		}
	}
}

// getenv is a container's environment as the process sees it: its
// values (paths under root, the pod's name for the replica id), and,
// with envFrom, the access keys a Secret of credentials would hold.
func (pf *podFiles) getenv(c k8sContainer) func(string) string {
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = pf.rooted(e.Value)
		if e.ValueFrom != nil {
			env[e.Name] = "ops-capoller-7d9f8-x2x4q"
		}
	}
	return func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		if len(c.EnvFrom) > 0 && strings.Contains(k, "ACCESS_KEY") {
			return "LTAI5tFakeFromTheSecret"
		}
		return ""
	}
}

// urlPorts are the TCP ports of an engine's URL, one per host.
func urlPorts(t *testing.T, raw string, defaultPort int) []int {
	t.Helper()
	var ports []int
	for _, part := range strings.Split(raw, ",") {
		part = strings.TrimSpace(part)
		if !strings.Contains(part, "://") {
			part = "x://" + part
		}
		u, err := url.Parse(part)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		p := defaultPort
		if u.Port() != "" {
			p, _ = strconv.Atoi(u.Port())
		}
		ports = append(ports, p)
	}
	return ports
}

// addrPort is the port of a listen address such as ":9090".
func addrPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, ok := strings.Cut(addr, ":")
	n, err := strconv.Atoi(p)
	if !ok || err != nil {
		t.Fatalf("address %q has no port", addr)
	}
	return n
}

// helpNames are the flags and variables a subcommand's --help lists.
func helpNames(t *testing.T, cmd string) (flags, env map[string]bool) {
	t.Helper()
	flags, env = map[string]bool{}, map[string]bool{}
	out := helpOf(t, []string{cmd})
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(out, -1) {
		flags[m[1]] = true
	}
	for _, m := range regexp.MustCompile(`env (CAPOLLER_[A-Z0-9_]+)`).FindAllStringSubmatch(out, -1) {
		env[m[1]] = true
	}
	return flags, env
}

// chartMeta is Chart.yaml's name and versions.
func chartMeta(t *testing.T) (name, version, appVersion string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		APIVersion string `yaml:"apiVersion"`
		Name       string `yaml:"name"`
		Version    string `yaml:"version"`
		AppVersion string `yaml:"appVersion"`
	}
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	if c.APIVersion != "v2" {
		t.Errorf("Chart.yaml: apiVersion %q, want v2", c.APIVersion)
	}
	return c.Name, c.Version, c.AppVersion
}

// checkLabels holds every object to the recommended labels.
func checkLabels(t *testing.T, r rendered) {
	t.Helper()
	name, version, appVersion := chartMeta(t)
	want := map[string]string{
		"app.kubernetes.io/name": name, "app.kubernetes.io/instance": helmRelease,
		"app.kubernetes.io/version": appVersion, "app.kubernetes.io/part-of": "capoller",
		"app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": name + "-" + version,
	}
	for _, ms := range r {
		for _, m := range ms {
			for k, v := range want {
				if got := m.Metadata.Labels[k]; got != v {
					t.Errorf("%s: label %s is %q, want %q", m, k, got, v)
				}
			}
			if m.Metadata.Labels["app.kubernetes.io/component"] == "" {
				t.Errorf("%s: no app.kubernetes.io/component label", m)
			}
		}
	}
}

// checkContainer holds what every pod of the chart shares: a restricted
// security context, requests and limits, and the Secrets readable by the
// non-root user.
func checkContainer(t *testing.T, where string, d k8sDeployment) {
	t.Helper()
	c := d.container(t)
	if !c.SecurityContext.ReadOnlyRootFilesystem || c.SecurityContext.AllowPrivilegeEscalation || c.Resources.Limits["memory"] == "" || c.Resources.Requests["cpu"] == "" {
		t.Errorf("%s: want a restricted security context, requests and limits: %+v %+v", where, c.SecurityContext, c.Resources)
	}
	if sc := d.Spec.Template.Spec.SecurityContext; !sc.RunAsNonRoot || sc.FSGroup == 0 {
		t.Errorf("%s: want a non-root user whose group reads the Secrets: %+v", where, sc)
	}
	if !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) {
		t.Errorf("%s: the selector %v does not select its pods %v", where, d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels)
	}
}

// probeAnswers checks that run's ops server answers 200 on path.
func probeAnswers(t *testing.T, where, path string) {
	t.Helper()
	mux := opsMux(newRegistry(), func() error { return nil }, func(context.Context) error { return nil })
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	if path == "" || rec.Code != 200 {
		t.Errorf("%s: %q answers %d", where, path, rec.Code)
	}
}

// checkRun holds run's Deployment and ConfigMap to the code: its flags
// and variables exist, its files are mounted where its settings read
// them, its probes and ports are the ops server's, and the configuration
// they make loads.
func checkRun(t *testing.T, r rendered, known deployNames, p testenv.PKI) config {
	t.Helper()
	var d k8sDeployment
	r.one(t, "Deployment", "capoller").decode(t, &d)
	checkContainer(t, "run", d)
	c := d.container(t)
	if len(c.Args) == 0 || c.Args[0] != "run" {
		t.Fatalf("run: args %v", c.Args)
	}
	checkArgs(t, "run", c.Args, known.flags)
	var env []string
	for _, e := range c.Env {
		env = append(env, e.Name)
		if strings.HasPrefix(e.Name, "CAPOLLER_") && !known.env[e.Name] {
			t.Errorf("run: the variable %s names no setting", e.Name)
		}
	}
	checkEnv(t, "run", env, known.env)
	if c.LivenessProbe == nil || c.ReadinessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Fatalf("run: want liveness on /healthz and readiness on /readyz: %+v %+v", c.LivenessProbe, c.ReadinessProbe)
	}
	probeAnswers(t, "run's liveness probe", c.LivenessProbe.HTTPGet.Path)
	probeAnswers(t, "run's readiness probe", c.ReadinessProbe.HTTPGet.Path)
	probeAnswers(t, "the ServiceMonitor's path", "/metrics")
	if ops := c.port("metrics"); ops == 0 || ops != addrPort(t, c.env("CAPOLLER_METRICS_ADDR")) {
		t.Errorf("run: the metrics port %d is not CAPOLLER_METRICS_ADDR %q", ops, c.env("CAPOLLER_METRICS_ADDR"))
	}
	pf := layPod(t, r, d)
	pf.layFiles(t, r, d, "run", p)
	args := make([]string, 0, len(c.Args)-1)
	for _, a := range c.Args[1:] {
		args = append(args, pf.rooted(a))
	}
	cfg, err := loadConfig(flag.NewFlagSet("run", flag.ContinueOnError), args, pf.getenv(c))
	if err != nil {
		t.Fatalf("run: the rendered configuration is refused: %v", err)
	}
	return cfg
}

// checkNotify holds notify's Deployment and ConfigMap to notify's flags,
// variables and configuration.
func checkNotify(t *testing.T, r rendered, p testenv.PKI) {
	t.Helper()
	flags, env := helpNames(t, "notify")
	var d k8sDeployment
	r.one(t, "Deployment", "notify").decode(t, &d)
	checkContainer(t, "notify", d)
	c := d.container(t)
	if len(c.Args) == 0 || c.Args[0] != "notify" || d.Spec.Replicas != 1 || d.Spec.Strategy.Type != "Recreate" {
		t.Fatalf("notify: args %v, %d replicas, strategy %q: want one pod per durable, replaced", c.Args, d.Spec.Replicas, d.Spec.Strategy.Type)
	}
	checkArgs(t, "notify", c.Args, flags)
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "CAPOLLER_") && !env[e.Name] {
			t.Errorf("notify: the variable %s is not one notify reads", e.Name)
		}
	}
	src, err := os.ReadFile("notify.go")
	if err != nil {
		t.Fatal(err)
	}
	if c.LivenessProbe == nil || !bytes.Contains(src, []byte(`HandleFunc("`+c.LivenessProbe.HTTPGet.Path+`"`)) {
		t.Errorf("notify: its liveness probe %+v is not a path notify serves", c.LivenessProbe)
	}
	if ops := c.port("metrics"); ops == 0 || ops != addrPort(t, c.env("CAPOLLER_METRICS_ADDR")) {
		t.Errorf("notify: the metrics port %d is not CAPOLLER_METRICS_ADDR %q", ops, c.env("CAPOLLER_METRICS_ADDR"))
	}
	pf := layPod(t, r, d)
	pf.layFiles(t, r, d, "notify", p)
	config := ""
	for i, a := range c.Args {
		if a == "--config" && i+1 < len(c.Args) {
			config = pf.rooted(c.Args[i+1])
		}
	}
	raw, err := os.ReadFile(config)
	if err != nil {
		t.Fatalf("notify: --config is not the mounted ConfigMap: %v", err)
	}
	getenv := pf.getenv(c)
	withSecretEnv := func(k string) string {
		if v := getenv(k); v != "" || len(c.EnvFrom) == 0 {
			return v
		}
		if strings.HasSuffix(k, "_URL") {
			return "https://oapi.dingtalk.com/robot/send?access_token=fake"
		}
		return "SECfake"
	}
	s, err := notify.ParseConfig(raw, withSecretEnv, os.ReadFile)
	if err != nil {
		t.Fatalf("notify: the rendered configuration is refused: %v", err)
	}
	if len(s.Webhooks) == 0 {
		t.Error("notify: no webhook")
	}
}

// checkNetwork holds the Services, the PDB, the ServiceMonitor and the
// NetworkPolicies to the pods and ports they are for.
func checkNetwork(t *testing.T, r rendered, cfg config) {
	t.Helper()
	var run, nt k8sDeployment
	r.one(t, "Deployment", "capoller").decode(t, &run)
	r.one(t, "Deployment", "notify").decode(t, &nt)
	runPods, runC := run.Spec.Template.Metadata.Labels, run.container(t)
	type service struct {
		Spec struct {
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				Name       string `yaml:"name"`
				Port       int    `yaml:"port"`
				TargetPort string `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	services := map[string]service{}
	for _, m := range r["Service"] {
		var s service
		m.decode(t, &s)
		services[m.Metadata.Name] = s
		pods, c := runPods, runC
		if !selects(s.Spec.Selector, pods) {
			pods, c = nt.Spec.Template.Metadata.Labels, nt.container(t)
		}
		if !selects(s.Spec.Selector, pods) {
			t.Errorf("%s selects no pod of the chart", m)
		}
		for _, p := range s.Spec.Ports {
			if c.port(p.TargetPort) == 0 {
				t.Errorf("%s: the port %s targets %q, which the pod does not name", m, p.Name, p.TargetPort)
			}
		}
	}
	hints := services[helmRelease+"-capoller-hints"]
	if len(hints.Spec.Ports) != 1 || hints.Spec.Ports[0].Port != 443 || runC.port("hints") != addrPort(t, cfg.Hints.Listen) {
		t.Errorf("the hints Service %+v, the pod's port %d, hints-listen %q: want 443 (TLS) to the port capoller listens on", hints.Spec, runC.port("hints"), cfg.Hints.Listen)
	}

	var pdb struct {
		Spec struct {
			MaxUnavailable int `yaml:"maxUnavailable"`
			Selector       struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
		} `yaml:"spec"`
	}
	r.one(t, "PodDisruptionBudget", "capoller").decode(t, &pdb)
	if !selects(pdb.Spec.Selector.MatchLabels, runPods) || pdb.Spec.MaxUnavailable != 1 {
		t.Errorf("the PodDisruptionBudget %+v: want one of run's replicas at a time", pdb.Spec)
	}

	var sm struct {
		APIVersion string `yaml:"apiVersion"`
		Spec       struct {
			Selector struct {
				MatchLabels      map[string]string `yaml:"matchLabels"`
				MatchExpressions []struct {
					Key      string   `yaml:"key"`
					Operator string   `yaml:"operator"`
					Values   []string `yaml:"values"`
				} `yaml:"matchExpressions"`
			} `yaml:"selector"`
			Endpoints []struct {
				Port string `yaml:"port"`
				Path string `yaml:"path"`
			} `yaml:"endpoints"`
		} `yaml:"spec"`
	}
	r.one(t, "ServiceMonitor", "capoller").decode(t, &sm)
	if sm.APIVersion != "monitoring.coreos.com/v1" || len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Fatalf("the ServiceMonitor: %+v", sm)
	}
	scraped := 0
	for _, m := range r["Service"] {
		ok := selects(sm.Spec.Selector.MatchLabels, m.Metadata.Labels)
		for _, e := range sm.Spec.Selector.MatchExpressions {
			ok = ok && e.Operator == "In" && slices.Contains(e.Values, m.Metadata.Labels[e.Key])
		}
		if !ok {
			continue
		}
		scraped++
		if !slices.ContainsFunc(services[m.Metadata.Name].Spec.Ports, func(p struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		}) bool {
			return p.Name == sm.Spec.Endpoints[0].Port
		}) {
			t.Errorf("the ServiceMonitor selects %s, which has no port %s", m, sm.Spec.Endpoints[0].Port)
		}
	}
	if scraped != 2 {
		t.Errorf("the ServiceMonitor selects %d Services, want run's and notify's metrics", scraped)
	}

	type netpol struct {
		Spec struct {
			PodSelector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"podSelector"`
			Ingress []struct {
				Ports []struct {
					Port int `yaml:"port"`
				} `yaml:"ports"`
			} `yaml:"ingress"`
			Egress []struct {
				Ports []struct {
					Port     int    `yaml:"port"`
					Protocol string `yaml:"protocol"`
				} `yaml:"ports"`
			} `yaml:"egress"`
		} `yaml:"spec"`
	}
	ports := func(np netpol) (in, out []int) {
		for _, i := range np.Spec.Ingress {
			for _, p := range i.Ports {
				in = append(in, p.Port)
			}
		}
		for _, e := range np.Spec.Egress {
			for _, p := range e.Ports {
				out = append(out, p.Port)
			}
		}
		return in, out
	}
	var np netpol
	r.one(t, "NetworkPolicy", "capoller").decode(t, &np)
	in, out := ports(np)
	wantOut := append(urlPorts(t, cfg.NATSURL, 4222), 443, 53)
	if strings.Contains(cfg.RedisURL, "sentinel") {
		wantOut = append(wantOut, urlPorts(t, cfg.RedisURL, 26379)...)
	} else {
		wantOut = append(wantOut, urlPorts(t, cfg.RedisURL, 6379)...)
	}
	for _, p := range wantOut {
		if !slices.Contains(out, p) {
			t.Errorf("the NetworkPolicy lets out %v, not %d (NATS %s, Redis %s, the API, DNS)", out, p, cfg.NATSURL, cfg.RedisURL)
		}
	}
	for _, p := range []int{runC.port("metrics"), runC.port("hints")} {
		if !slices.Contains(in, p) {
			t.Errorf("the NetworkPolicy lets in %v, not %d", in, p)
		}
	}
	if !selects(np.Spec.PodSelector.MatchLabels, runPods) {
		t.Errorf("the NetworkPolicy selects %v, not run's pods", np.Spec.PodSelector.MatchLabels)
	}
	r.one(t, "NetworkPolicy", "notify").decode(t, &np)
	in, out = ports(np)
	if !selects(np.Spec.PodSelector.MatchLabels, nt.Spec.Template.Metadata.Labels) || !slices.Contains(in, nt.container(t).port("metrics")) || !slices.Contains(out, urlPorts(t, cfg.NATSURL, 4222)[0]) {
		t.Errorf("notify's NetworkPolicy: %+v", np.Spec)
	}
}

// checkDashboard holds the dashboard's ConfigMap to deploy/grafana's, and
// every metric the chart names (the dashboard's among them) to the code.
func checkDashboard(t *testing.T, r rendered, out string, known deployNames) {
	t.Helper()
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	m := r.one(t, "ConfigMap", "dashboard")
	m.decode(t, &cm)
	want, err := os.ReadFile("../../deploy/grafana/capoller.json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(cm.Data["capoller.json"]) != strings.TrimSpace(string(want)) {
		t.Error("the dashboard's ConfigMap is not deploy/grafana/capoller.json")
	}
	if m.Metadata.Labels["grafana_dashboard"] != "1" || m.Metadata.Namespace != "monitoring" {
		t.Errorf("the dashboard's ConfigMap: labels %v, namespace %q: want grafana_dashboard \"1\", in dashboard.namespace", m.Metadata.Labels, m.Metadata.Namespace)
	}
	metrics := regexp.MustCompile(`capoller_[a-z_]+`).FindAllString(out, -1)
	if len(metrics) < 10 {
		t.Errorf("the chart names %d metrics", len(metrics))
	}
	for _, name := range metrics {
		if !known.metrics[name] && !known.metrics[histogramOf(name)] {
			t.Errorf("the chart names the metric %s, which the code does not expose", name)
		}
	}
}

// The chart, rendered with every toggle on and every Secret referenced
// (ci/all-on-values.yaml), names only flags, variables, paths, ports and
// metrics that exist: its Secrets are mounted where the settings that
// read them look, and the configuration it makes loads.
func TestHelmChartNamesWhatExists(t *testing.T) {
	helm := helmBinary(t)
	out, err := helmTemplate(t, helm, "-f", filepath.Join(chartDir, "ci", "all-on-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r := parseRendered(t, out)
	for kind, n := range map[string]int{"ConfigMap": 3, "Deployment": 2, "Service": 3, "ServiceAccount": 1, "PodDisruptionBudget": 1, "ServiceMonitor": 1, "NetworkPolicy": 2} {
		if len(r[kind]) != n {
			t.Errorf("%d %s, want %d: %v", len(r[kind]), kind, n, r[kind])
		}
	}
	if len(r["Secret"]) > 0 {
		t.Error("the chart creates a Secret: it references existing ones only")
	}
	if strings.Contains(out, "pprof") {
		t.Error("the chart exposes the profiler")
	}
	checkLabels(t, r)
	known := knownDeployNames(t)
	p := testenv.NewPKI(t)
	cfg := checkRun(t, r, known, p)
	if len(cfg.Accounts) != 3 || cfg.NATS.Creds == "" || cfg.NATS.CA == "" || cfg.Redis.PasswordFile == "" || cfg.Redis.Cert == "" || cfg.Hints.TokenFile == "" || cfg.Hints.TLSCert == "" {
		t.Errorf("run's configuration lacks what the values gave: accounts %d, NATS %+v, Redis %+v, hints %+v", len(cfg.Accounts), cfg.NATS.Creds != "", cfg.Redis.Cert != "", cfg.Hints.TokenFile != "")
	}
	if f := cfg.Accounts[1].Credentials.SecurityTokenFile; cfg.Accounts[1].Credentials.Source != "file" || f == "" {
		t.Errorf("the sts account's existingSecret: source %q, token file %q", cfg.Accounts[1].Credentials.Source, f)
	}
	checkNotify(t, r, p)
	checkNetwork(t, r, cfg)
	checkDashboard(t, r, out, known)
}

// With its defaults the chart is run alone, on the engines' default
// ports, without the toggles; the values it cannot take are refused
// naming the value.
func TestHelmChartDefaultsAndRefusals(t *testing.T) {
	helm := helmBinary(t)
	out, err := helmTemplate(t, helm)
	if err != nil {
		t.Fatal(err)
	}
	r := parseRendered(t, out)
	for _, kind := range []string{"ServiceMonitor", "NetworkPolicy", "Secret"} {
		if len(r[kind]) > 0 {
			t.Errorf("the defaults render a %s", kind)
		}
	}
	if len(r["Deployment"]) != 1 || len(r["PodDisruptionBudget"]) != 1 || len(r["ConfigMap"]) != 1 {
		t.Errorf("the defaults render %v", r)
	}
	checkLabels(t, r)
	cfg := checkRun(t, r, knownDeployNames(t), testenv.NewPKI(t))
	def := defaultConfig()
	if got, want := urlPorts(t, cfg.NATSURL, 4222), urlPorts(t, def.NATSURL, 0); !slices.Equal(got, want) {
		t.Errorf("the chart's NATS is on %v, the code's default on %v", got, want)
	}
	if got, want := urlPorts(t, cfg.RedisURL, 6379), urlPorts(t, def.RedisURL, 0); !slices.Equal(got, want) {
		t.Errorf("the chart's Redis is on %v, the code's default on %v", got, want)
	}
	dockerfile, err := os.ReadFile("../../deploy/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("EXPOSE %d\nENTRYPOINT [\"/usr/local/bin/capoller\"]", addrPort(t, cfg.MetricsAddr)); !strings.Contains(string(dockerfile), want) {
		t.Errorf("the chart's ops address %q is not the port the image exposes", cfg.MetricsAddr)
	}
	if cfg.StreamReplicas != 3 || len(cfg.Regions) == 0 || cfg.Hints.Listen != "" {
		t.Errorf("the defaults: %d stream replicas, regions %v, hints %q", cfg.StreamReplicas, cfg.Regions, cfg.Hints.Listen)
	}

	// The default chain skips the instance's metadata; an ecs_ram_role
	// account keeps it (the SDK's ECS RAM role builder honours
	// ALIBABA_CLOUD_ECS_METADATA_DISABLED too).
	var d k8sDeployment
	r.one(t, "Deployment", "capoller").decode(t, &d)
	if got := d.container(t).env("ALIBABA_CLOUD_ECS_METADATA_DISABLED"); got != "true" {
		t.Errorf("the defaults: ALIBABA_CLOUD_ECS_METADATA_DISABLED=%q, want true", got)
	}
	out, err = helmTemplate(t, helm, "--set", "accounts[0].name=local", "--set", "accounts[0].regions[0]=cn-hangzhou", "--set", "accounts[0].credentials.type=ecs_ram_role")
	if err != nil {
		t.Fatal(err)
	}
	parseRendered(t, out).one(t, "Deployment", "capoller").decode(t, &d)
	if got := d.container(t).env("ALIBABA_CLOUD_ECS_METADATA_DISABLED"); got != "false" {
		t.Errorf("with an ecs_ram_role account: ALIBABA_CLOUD_ECS_METADATA_DISABLED=%q, want false", got)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "engines.nats.url=embedded"}, "engines.nats.url"},
		{[]string{"--set", "config.nats-url=nats://x:4222"}, "nats-url"},
		{[]string{"--set", "config.interval=30"}, "interval"},
		{[]string{"--set", "engines.checkpoint=etcd"}, "checkpoint"},
		{[]string{"--set", "hints.enabled=true"}, "hints.token.existingSecret"},
		{[]string{"--set", "engines.redis.url=redis://:pw@redis:6379/0"}, "engines.redis.url: no password in the URL"},
		{[]string{"--set", "engines.redis.tls.existingSecret=tls"}, "engines.redis.tls"},
		{[]string{"--set", "engines.nats.token.existingSecret=a", "--set", "engines.nats.creds.existingSecret=b"}, "choose one way"},
		{[]string{"--set", "credentials.existingSecret="}, "credentials.existingSecret"},
		{[]string{"--set", "notify.enabled=true"}, "notify.config.webhooks"},
		{[]string{"--set", "config.regions[0]=cn-hangzhou", "--set", "accounts[0].name=prod", "--set", "accounts[0].regions[0]=cn-hangzhou", "--set", "accounts[0].credentials.type=access_key"}, "config.regions and config.sources"},
		{[]string{"--set", "accounts[0].name=a b", "--set", "accounts[0].regions[0]=cn-hangzhou", "--set", "accounts[0].credentials.type=access_key"}, "name"},
		{[]string{"--set", "accounts[0].name=p", "--set", "accounts[0].regions[0]=cn-hangzhou", "--set", "accounts[0].credentials.type=access_key", "--set", "accounts[0].credentials.access_key_secret=x"}, "access_key_secret"},
	} {
		_, err := helmTemplate(t, helm, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v; want it to name %q", c.args, err, c.want)
		}
	}
}

// The chart's dashboard is a copy of deploy/grafana/capoller.json (a
// chart reads only files under its own directory): the two stay one.
func TestHelmChartDashboardIsDeploys(t *testing.T) {
	chart, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "capoller.json"))
	if err != nil {
		t.Fatal(err)
	}
	deploy, err := os.ReadFile("../../deploy/grafana/capoller.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(chart, deploy) {
		t.Error("deploy/helm/capoller/dashboards/capoller.json differs from deploy/grafana/capoller.json: copy it over (cp deploy/grafana/capoller.json deploy/helm/capoller/dashboards/)")
	}
}

// The schema's config takes run's settings only, by their names, and
// values.yaml's config is among them.
func TestHelmValuesSchemaNamesSettings(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			Config struct {
				AdditionalProperties *bool          `json:"additionalProperties"`
				Properties           map[string]any `json:"properties"`
			} `json:"config"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	known := map[string]bool{}
	for _, s := range settings() {
		known[s.name] = true
	}
	cfg := schema.Properties.Config
	if cfg.AdditionalProperties == nil || *cfg.AdditionalProperties || len(cfg.Properties) < 20 {
		t.Fatalf("the schema's config: additionalProperties %v, %d properties: want the settings, and nothing else", cfg.AdditionalProperties, len(cfg.Properties))
	}
	for name := range cfg.Properties {
		if !known[name] {
			t.Errorf("values.schema.json: config.%s is not a setting of capoller run", name)
		}
	}
	for _, owned := range []string{"nats-url", "redis-url", "metrics-addr", "hints-listen", "replica-id", "pprof-addr", "checkpoint"} {
		if _, ok := cfg.Properties[owned]; ok {
			t.Errorf("values.schema.json: config.%s is set by the chart, and must not be set twice", owned)
		}
	}
	values, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Config map[string]any `yaml:"config"`
	}
	if err := yaml.Unmarshal(values, &v); err != nil {
		t.Fatal(err)
	}
	for name := range v.Config {
		if _, ok := cfg.Properties[name]; !ok {
			t.Errorf("values.yaml: config.%s is not in the schema", name)
		}
	}
}

// TestHelmChartOpensWhatTheCredentialsAndTracingNeed: with the instance's
// metadata in use (credentials.ecsMetadata, or an ecs_ram_role account),
// the NetworkPolicy lets the pods reach the metadata service
// (100.100.100.200:80), which serves the role's credentials, and only
// then; credentials.defaultChain (RRSA) installs without a key Secret;
// extraEnv reaches both containers (OpenTelemetry's variables).
func TestHelmChartOpensWhatTheCredentialsAndTracingNeed(t *testing.T) {
	helm := helmBinary(t)
	type policy struct {
		Spec struct {
			Egress []struct {
				To []struct {
					IPBlock struct {
						CIDR string `yaml:"cidr"`
					} `yaml:"ipBlock"`
				} `yaml:"to"`
				Ports []struct {
					Port int `yaml:"port"`
				} `yaml:"ports"`
			} `yaml:"egress"`
		} `yaml:"spec"`
	}
	metadataOpen := func(r rendered) bool {
		var p policy
		r.one(t, "NetworkPolicy", "capoller").decode(t, &p)
		for _, e := range p.Spec.Egress {
			if len(e.To) == 1 && e.To[0].IPBlock.CIDR == "100.100.100.200/32" && len(e.Ports) == 1 && e.Ports[0].Port == 80 {
				return true
			}
		}
		return false
	}
	for _, c := range []struct {
		args     []string
		metadata bool
	}{
		{[]string{"--set", "networkPolicy.enabled=true"}, false},
		{[]string{"--set", "networkPolicy.enabled=true", "--set", "credentials.ecsMetadata=true"}, true},
		// RRSA: no key Secret, the default chain reads what ACK injects.
		{[]string{"--set", "networkPolicy.enabled=true", "--set", "credentials.existingSecret=", "--set", "credentials.defaultChain=true"}, false},
		{[]string{"--set", "networkPolicy.enabled=true", "--set", "credentials.existingSecret=",
			"--set", "accounts[0].name=prod", "--set", "accounts[0].credentials.type=ecs_ram_role", "--set", "accounts[0].regions[0]=cn-hangzhou"}, true},
	} {
		out, err := helmTemplate(t, helm, c.args...)
		if err != nil {
			t.Fatal(err)
		}
		r := parseRendered(t, out)
		var run k8sDeployment
		r.one(t, "Deployment", "capoller").decode(t, &run)
		if got := metadataOpen(r); got != c.metadata {
			t.Errorf("%v: the metadata service open %v, want %v", c.args, got, c.metadata)
		}
		if disabled := run.container(t).env("ALIBABA_CLOUD_ECS_METADATA_DISABLED"); disabled != strconv.FormatBool(!c.metadata) {
			t.Errorf("%v: ALIBABA_CLOUD_ECS_METADATA_DISABLED=%q with the metadata in use %v", c.args, disabled, c.metadata)
		}
	}

	out, err := helmTemplate(t, helm, "--set", "notify.enabled=true", "--set", "notify.config.webhooks[0].name=x",
		"--set", "notify.config.webhooks[0].kind=generic", "--set", "notify.config.webhooks[0].url=https://example.com/hook",
		"--set", "extraEnv[0].name=OTEL_EXPORTER_OTLP_ENDPOINT", "--set", "extraEnv[0].value=http://otel:4318")
	if err != nil {
		t.Fatal(err)
	}
	r := parseRendered(t, out)
	for _, name := range []string{"capoller", "notify"} {
		var d k8sDeployment
		r.one(t, "Deployment", name).decode(t, &d)
		if got := d.container(t).env("OTEL_EXPORTER_OTLP_ENDPOINT"); got != "http://otel:4318" {
			t.Errorf("%s: OTEL_EXPORTER_OTLP_ENDPOINT=%q from extraEnv", name, got)
		}
	}
}
