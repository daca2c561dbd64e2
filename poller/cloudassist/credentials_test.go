package cloudassist

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"gopkg.in/yaml.v3"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// The secrets the credential tests put in variables and files: no error
// may show any of them.
const (
	testID     = "LTAI5tTestKeyId"
	testSecret = "hunter2-S3cret"
	testToken  = "sts-T0ken-secret"
)

// fakeEnv is a getenv over a map.
func fakeEnv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// writeSecret writes one value to a file, as a mounted secret holds it.
func writeSecret(t *testing.T, dir, name, value string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(value), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// credentialsOf reads credentials as a configuration file states them,
// and wants them valid.
func credentialsOf(t *testing.T, creds string) Credentials {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(creds))
	dec.KnownFields(true)
	var c Credentials
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%s: %v", creds, err)
	}
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatalf("%s: %v", creds, errs)
	}
	return c
}

// noEnv is a getenv of an empty environment.
func noEnv(string) string { return "" }

// noSecretIn fails the test if err shows one of the test's secrets.
func noSecretIn(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range []string{testSecret, testToken, "S3cret", "T0ken"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("%s: the error shows a secret: %v", what, err)
		}
	}
}

// Each credential type resolves, from the environment or from files, to
// the SDK's own credential type, and to a provider that signs with it.
func TestCredentialOfEachType(t *testing.T) {
	dir := t.TempDir()
	idFile := writeSecret(t, dir, "id", testID+"\n")
	secretFile := writeSecret(t, dir, "secret", "  "+testSecret+"\n")
	tokenFile := writeSecret(t, dir, "token", testToken)
	defaults := fakeEnv(map[string]string{envAccessKeyID: testID, envAccessKeySecret: testSecret, envSecurityToken: testToken})
	named := fakeEnv(map[string]string{"PROD_ID": testID, "PROD_SECRET": testSecret, "PROD_TOKEN": testToken, envAccessKeyID: "LTAIwrong"})
	for _, tc := range []struct {
		creds    string
		getenv   func(string) string
		want     any
		provider string
	}{
		{"{type: access_key, source: env}", defaults,
			&credentials.AccessKeyCredential{AccessKeyId: testID, AccessKeySecret: testSecret}, "static_ak"},
		{"{type: access_key, source: env, access_key_id_env: PROD_ID, access_key_secret_env: PROD_SECRET}", named,
			&credentials.AccessKeyCredential{AccessKeyId: testID, AccessKeySecret: testSecret}, "static_ak"},
		{"{type: access_key, source: file, access_key_id_file: " + idFile + ", access_key_secret_file: " + secretFile + "}", noEnv,
			&credentials.AccessKeyCredential{AccessKeyId: testID, AccessKeySecret: testSecret}, "static_ak"},
		{"{type: sts, source: env}", defaults,
			&credentials.StsTokenCredential{AccessKeyId: testID, AccessKeySecret: testSecret, AccessKeyStsToken: testToken}, "static_sts"},
		{"{type: sts, source: env, access_key_id_env: PROD_ID, access_key_secret_env: PROD_SECRET, security_token_env: PROD_TOKEN}", named,
			&credentials.StsTokenCredential{AccessKeyId: testID, AccessKeySecret: testSecret, AccessKeyStsToken: testToken}, "static_sts"},
		{"{type: sts, source: file, access_key_id_file: " + idFile + ", access_key_secret_file: " + secretFile + ", security_token_file: " + tokenFile + "}", noEnv,
			&credentials.StsTokenCredential{AccessKeyId: testID, AccessKeySecret: testSecret, AccessKeyStsToken: testToken}, "static_sts"},
		{`{type: ram_role_arn, source: env, role_arn: "acs:ram::123:role/capoller"}`, defaults,
			&credentials.RamRoleArnCredential{AccessKeyId: testID, AccessKeySecret: testSecret, RoleArn: "acs:ram::123:role/capoller",
				RoleSessionName: "capoller-prod"}, "ram_role_arn"},
		{`{type: ram_role_arn, source: file, access_key_id_file: ` + idFile + `, access_key_secret_file: ` + secretFile +
			`, role_arn: "acs:ram::123:role/capoller", role_session_name: poller@prod, external_id: ext-1, policy: '{"Version":"1"}', session_duration: 30m, sts_region: cn-shanghai}`,
			noEnv,
			&credentials.RamRoleArnCredential{AccessKeyId: testID, AccessKeySecret: testSecret, RoleArn: "acs:ram::123:role/capoller",
				RoleSessionName: "poller@prod", RoleSessionExpiration: 1800, Policy: `{"Version":"1"}`, StsRegion: "cn-shanghai", ExternalId: "ext-1"}, "ram_role_arn"},
		{"{type: ecs_ram_role, role_name: capoller-role}", noEnv, &credentials.EcsRamRoleCredential{RoleName: "capoller-role"}, "ecs_ram_role"},
		{"{type: ecs_ram_role}", noEnv, &credentials.EcsRamRoleCredential{}, "ecs_ram_role"},
	} {
		c := credentialsOf(t, tc.creds)
		got, err := c.sdkCredential("prod", tc.getenv)
		if err != nil {
			t.Errorf("%s: %v", tc.creds, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: credential %+v, want %+v", tc.creds, got, tc.want)
		}
		p, err := c.Provider("prod", tc.getenv)
		if err != nil {
			t.Errorf("%s: Provider(prod): %v", tc.creds, err)
			continue
		}
		if p.GetProviderName() != tc.provider {
			t.Errorf("%s: provider %s, want %s", tc.creds, p.GetProviderName(), tc.provider)
		}
		if tc.provider != "static_ak" && tc.provider != "static_sts" {
			continue // the others call STS or the metadata service
		}
		cc, err := p.GetCredentials()
		wantToken := ""
		if tc.provider == "static_sts" {
			wantToken = testToken
		}
		if err != nil || cc.AccessKeyId != testID || cc.AccessKeySecret != testSecret || cc.SecurityToken != wantToken {
			t.Errorf("%s: the provider signs with %+v (%v)", tc.creds, cc, err)
		}
	}
}

// A CLI profile is the SDK's CLI provider over the CLI's own file, checked
// before the SDK reads it: the SDK's errors quote the whole file.
func TestCredentialCLIProfile(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home) // the SDK reads the CLI's file under $HOME itself
	t.Setenv("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "")
	env := fakeEnv(map[string]string{"HOME": home})
	c := credentialsOf(t, "{type: cli_profile, profile: prod}")
	if _, err := c.Provider("prod", env); err == nil || !strings.Contains(err.Error(), `account "prod"`) || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("without the CLI's file: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(home, ".aliyun"), 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(home, ".aliyun", "config.json")
	for _, tc := range []struct{ content, want string }{
		{`{"profiles": [{"name": "dev", "mode": "AK", "access_key_id": "x", "access_key_secret": "` + testSecret + `"}`, "not valid JSON"},
		{`{"current": "dev", "profiles": [{"name": "dev", "mode": "AK", "access_key_id": "x", "access_key_secret": "` + testSecret + `"}]}`, `not in ` + file + `, which has "dev"`},
		{`{"profiles": []}`, "has no profiles"},
	} {
		if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := c.Provider("prod", env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", tc.content, err, tc.want)
		}
		noSecretIn(t, tc.content, err)
	}
	if err := os.WriteFile(file, []byte(`{"current": "dev", "profiles": [{"name": "dev", "mode": "AK", "access_key_id": "LTAIdev", "access_key_secret": "dev"},
		{"name": "prod", "mode": "AK", "access_key_id": "`+testID+`", "access_key_secret": "`+testSecret+`"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := c.Provider("prod", env)
	if err != nil {
		t.Fatal(err)
	}
	if cc, err := p.GetCredentials(); err != nil || cc.AccessKeyId != testID || cc.AccessKeySecret != testSecret || !strings.HasPrefix(cc.ProviderName, "cli_profile/") {
		t.Errorf("the profile signs with %+v (%v)", cc, err)
	}
	disabled := fakeEnv(map[string]string{"HOME": home, "ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "true"})
	if _, err := c.Provider("prod", disabled); err == nil || !strings.Contains(err.Error(), "ALIBABA_CLOUD_CLI_PROFILE_DISABLED") {
		t.Errorf("with CLI profiles disabled: %v", err)
	}
}

// A missing or empty variable or file is an error naming the account and
// the variable or file, and no error shows a secret.
func TestCredentialErrorsNameTheReferenceNotTheSecret(t *testing.T) {
	dir := t.TempDir()
	idFile := writeSecret(t, dir, "id", testID)
	secretFile := writeSecret(t, dir, "secret", testSecret)
	empty := writeSecret(t, dir, "empty", " \n")
	twoLines := writeSecret(t, dir, "two-lines", testSecret+"\n"+testToken+"\n")
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		creds  string
		env    map[string]string
		naming []string
	}{
		{"{type: access_key, source: env}", map[string]string{envAccessKeyID: testID}, []string{envAccessKeySecret}},
		{"{type: access_key, source: env}", map[string]string{envAccessKeySecret: testSecret}, []string{envAccessKeyID}},
		{"{type: access_key, source: env, access_key_secret_env: PROD_SECRET}", map[string]string{envAccessKeyID: testID, envAccessKeySecret: testSecret}, []string{"PROD_SECRET"}},
		{"{type: sts, source: env}", map[string]string{envAccessKeyID: testID, envAccessKeySecret: testSecret}, []string{envSecurityToken}},
		{"{type: sts, source: env, security_token_env: T}", map[string]string{envAccessKeyID: testID, envAccessKeySecret: testSecret, "T": "  "}, []string{"T is empty"}},
		{`{type: ram_role_arn, source: env, role_arn: "acs:ram::1:role/r"}`, map[string]string{envAccessKeyID: testID}, []string{envAccessKeySecret}},
		{"{type: access_key, source: file, access_key_id_file: " + idFile + ", access_key_secret_file: " + missing + "}", nil, []string{"access_key_secret_file", missing}},
		{"{type: access_key, source: file, access_key_id_file: " + empty + ", access_key_secret_file: " + secretFile + "}", nil, []string{"access_key_id_file", empty, "empty"}},
		{"{type: access_key, source: file, access_key_id_file: " + idFile + ", access_key_secret_file: " + twoLines + "}", nil, []string{"access_key_secret_file", twoLines, "one value"}},
		{"{type: sts, source: file, access_key_id_file: " + idFile + ", access_key_secret_file: " + secretFile + ", security_token_file: " + dir + "}", nil, []string{"security_token_file", dir}},
	} {
		p, err := credentialsOf(t, tc.creds).Provider("prod", fakeEnv(tc.env))
		if err == nil {
			t.Errorf("%s %v: got %v, want an error", tc.creds, tc.env, p)
			continue
		}
		for _, n := range append(tc.naming, `account "prod": credentials:`) {
			if !strings.Contains(err.Error(), n) {
				t.Errorf("%s: %v; want it to name %q", tc.creds, err, n)
			}
		}
		noSecretIn(t, tc.creds, err)
	}
}

// The provider Provider returns is shared by the listers of an
// account's shards, each in its goroutine: it serializes the SDK
// provider, whose refreshing kinds keep their session unguarded.
func TestCredentialIsSafeToShare(t *testing.T) {
	inner := &refreshing{}
	p := &SharedProvider{p: inner}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if _, err := p.GetCredentials(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if inner.calls != 800 || p.GetProviderName() != "refreshing" {
		t.Errorf("%d calls of %s", inner.calls, p.GetProviderName())
	}
}

// refreshing is a provider that, like the SDK's RAM role provider, updates
// its state on every call without a lock: the race detector sees any
// unserialized use.
type refreshing struct{ calls int }

func (r *refreshing) GetCredentials() (*credentials.Credentials, error) {
	r.calls++
	return &credentials.Credentials{AccessKeyId: "id", AccessKeySecret: "secret"}, nil
}

func (r *refreshing) GetProviderName() string { return "refreshing" }

// The credentials of two accounts, as the daemon hands them to the
// listers, sign for each account at the emulator: each sees only its own
// work.
func TestCredentialSignsForItsAccount(t *testing.T) {
	sim, err := castest.New(castest.Options{AccessKeyID: "LTAIdefault", AccessKeySecret: "default-secret", Instances: 1,
		Accounts: []castest.Account{
			{Name: "prod", AccessKeyID: "LTAIprod", AccessKeySecret: "prod-secret"},
			{Name: "staging", AccessKeyID: "STS.staging", AccessKeySecret: "staging-secret", SecurityToken: "staging-token"},
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sim.Close() }()
	base, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	shards := []struct {
		account, source string
		creds           Credentials
	}{
		{"prod", "ecs", credentialsOf(t, "{type: access_key, source: env, access_key_id_env: PROD_ID, access_key_secret_env: PROD_SECRET}")},
		{"staging", "ecs-results", credentialsOf(t, "{type: sts, source: file, access_key_id_file: "+writeSecret(t, dir, "id", "STS.staging\n")+
			", access_key_secret_file: "+writeSecret(t, dir, "secret", "staging-secret\n")+
			", security_token_file: "+writeSecret(t, dir, "token", "staging-token\n")+"}")},
	}
	env := fakeEnv(map[string]string{"PROD_ID": "LTAIprod", "PROD_SECRET": "prod-secret"})
	want := map[string]string{}
	for _, name := range []string{"prod", "staging"} {
		a := sim.Account(name)
		id, err := a.Invoke("cn-hangzhou", []string{a.Instances()[0].ID}, "echo "+name, 60)
		if err != nil {
			t.Fatal(err)
		}
		want[name] = id
	}
	for _, sh := range shards {
		shard := sh.account + "/" + sh.source + "/cn-hangzhou"
		cred, err := sh.creds.Provider(sh.account, env)
		if err != nil {
			t.Fatal(err)
		}
		opts := Options{Region: "cn-hangzhou", Endpoint: base, Credential: cred, TransientRetries: -1, ThrottleRetries: -1}
		var l interface {
			Snapshot(context.Context) (diff.Snapshot, error)
		}
		if sh.source == "ecs-results" {
			l, err = NewECSResults(opts)
		} else {
			l, err = NewECS(opts)
		}
		if err != nil {
			t.Fatal(err)
		}
		snap, err := l.Snapshot(t.Context())
		if err != nil {
			t.Fatalf("%s: %v", shard, err)
		}
		for _, r := range snap.Records {
			if r.InvokeID != want[sh.account] {
				t.Errorf("%s lists %s, want only %s", shard, r.InvokeID, want[sh.account])
			}
		}
		if len(snap.Records) == 0 {
			t.Errorf("%s lists nothing", shard)
		}
	}
}
