package cloudassist

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"gopkg.in/yaml.v3"

	"github.com/capoller/capoller/poller/sensitive"
)

// CredentialsProvider is the SDK's provider of credentials, named here so
// that a caller holding one (as [Options.Credential] takes it) needs no
// import of the SDK.
type CredentialsProvider = credentials.CredentialsProvider

// StaticCredentials is a provider of a fixed access key pair, as the demo
// signs with.
func StaticCredentials(accessKeyID, accessKeySecret string) CredentialsProvider {
	return credentials.NewStaticAKCredentialsProvider(accessKeyID, accessKeySecret)
}

// ValidRegion reports whether r looks like an Alibaba Cloud region id:
// lower-case letters, digits and "-".
func ValidRegion(r string) bool {
	return r != "" && strings.Trim(r, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
}

// The credential types of an account, named as the SDK names them.
const (
	credAccessKey  = "access_key"   // an access key pair
	credSTS        = "sts"          // an access key pair and an STS security token
	credRAMRoleARN = "ram_role_arn" // a RAM role assumed with an access key pair
	credECSRAMRole = "ecs_ram_role" // the RAM role of the ECS instance capoller runs on
	credCLIProfile = "cli_profile"  // a profile of the Alibaba Cloud CLI's ~/.aliyun/config.json
)

// Where the keys of access_key, sts and ram_role_arn come from.
const (
	sourceEnv  = "env"  // environment variables
	sourceFile = "file" // files holding one value each, as Kubernetes and Docker secrets are mounted
)

// The environment variables that hold the keys by default, as the SDK
// reads them.
const (
	envAccessKeyID     = "ALIBABA_CLOUD_ACCESS_KEY_ID"
	envAccessKeySecret = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
	envSecurityToken   = "ALIBABA_CLOUD_SECURITY_TOKEN"
)

// Credentials is how an account signs its calls, as a configuration file
// states it. It holds references only — the names of environment
// variables, file paths, a role, a profile — never a secret, so that the
// configuration, its errors and its re-marshalled form can be shown. Its
// YAML keys are the SDK's own names. [Credentials.Validate] checks its
// shape; [Credentials.Provider] reads what it names and makes the SDK's
// provider.
type Credentials struct {
	// Type is one of access_key, sts, ram_role_arn, ecs_ram_role and
	// cli_profile.
	Type string `yaml:"type"`
	// Source says where access_key, sts and ram_role_arn find their keys:
	// env or file.
	Source string `yaml:"source,omitempty"`
	// With source env, the variables that hold the keys; default the SDK's
	// ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET and
	// ALIBABA_CLOUD_SECURITY_TOKEN.
	AccessKeyIDEnv     string `yaml:"access_key_id_env,omitempty"`
	AccessKeySecretEnv string `yaml:"access_key_secret_env,omitempty"`
	SecurityTokenEnv   string `yaml:"security_token_env,omitempty"`
	// With source file, the files that hold them, one value each
	// (surrounding white space is ignored); required.
	AccessKeyIDFile     string `yaml:"access_key_id_file,omitempty"`
	AccessKeySecretFile string `yaml:"access_key_secret_file,omitempty"`
	SecurityTokenFile   string `yaml:"security_token_file,omitempty"`
	// RoleARN is the role ram_role_arn assumes (acs:ram::<uid>:role/<name>);
	// the rest is optional: the session name (default capoller-<account>),
	// the external id and policy of the AssumeRole call, the session's
	// duration (15m..1h, default 1h) and the STS region (default
	// sts.aliyuncs.com).
	RoleARN         string        `yaml:"role_arn,omitempty"`
	RoleSessionName string        `yaml:"role_session_name,omitempty"`
	ExternalID      string        `yaml:"external_id,omitempty"`
	Policy          string        `yaml:"policy,omitempty"`
	SessionDuration time.Duration `yaml:"session_duration,omitempty"`
	STSRegion       string        `yaml:"sts_region,omitempty"`
	// RoleName is the ECS instance's RAM role for ecs_ram_role; empty asks
	// the instance's metadata service.
	RoleName string `yaml:"role_name,omitempty"`
	// Profile names the Alibaba Cloud CLI profile of cli_profile.
	Profile string `yaml:"profile,omitempty"`

	// Keys that would hold a secret itself are refused; their values are
	// never kept.
	InlineAccessKeyID     inlineSecret `yaml:"access_key_id,omitempty"`
	InlineAccessKeySecret inlineSecret `yaml:"access_key_secret,omitempty"`
	InlineSecurityToken   inlineSecret `yaml:"security_token,omitempty"`
	InlineSTSToken        inlineSecret `yaml:"sts_token,omitempty"`
	InlineSecret          inlineSecret `yaml:"secret,omitempty"`
	InlineToken           inlineSecret `yaml:"token,omitempty"`
	InlinePassword        inlineSecret `yaml:"password,omitempty"`
}

// inlineSecret marks a secret written into the configuration file. Its
// value is dropped as it is read, so no error, log line or re-marshalled
// configuration can show it; that it was there is refused by Validate.
type inlineSecret bool

// UnmarshalYAML records that the key was set, and forgets its value.
func (s *inlineSecret) UnmarshalYAML(*yaml.Node) error {
	*s = true
	return nil
}

// inline lists the keys that hold a secret written into the file, each
// with the references to use instead.
func (c Credentials) inline() (keys, instead []string) {
	for _, k := range []struct {
		set          inlineSecret
		key, instead string
	}{
		{c.InlineAccessKeyID, "access_key_id", "access_key_id_env or access_key_id_file"},
		{c.InlineAccessKeySecret, "access_key_secret", "access_key_secret_env or access_key_secret_file"},
		{c.InlineSecurityToken, "security_token", "security_token_env or security_token_file"},
		{c.InlineSTSToken, "sts_token", "security_token_env or security_token_file"},
		{c.InlineSecret, "secret", "access_key_secret_env or access_key_secret_file"},
		{c.InlineToken, "token", "security_token_env or security_token_file"},
		{c.InlinePassword, "password", "an environment variable or a file"},
	} {
		if k.set {
			keys, instead = append(keys, k.key), append(instead, k.instead)
		}
	}
	return keys, instead
}

// credentialKey is one reference of Credentials, with the types it
// applies to.
type credentialKey struct {
	name  string
	value string
	types []string
}

// keys lists the references of c that are set by name.
func (c Credentials) keys() []credentialKey {
	keyed := []string{credAccessKey, credSTS, credRAMRoleARN}
	sts := []string{credSTS}
	role := []string{credRAMRoleARN}
	duration := ""
	if c.SessionDuration != 0 {
		duration = c.SessionDuration.String()
	}
	return []credentialKey{
		{"source", c.Source, keyed},
		{"access_key_id_env", c.AccessKeyIDEnv, keyed},
		{"access_key_secret_env", c.AccessKeySecretEnv, keyed},
		{"security_token_env", c.SecurityTokenEnv, sts},
		{"access_key_id_file", c.AccessKeyIDFile, keyed},
		{"access_key_secret_file", c.AccessKeySecretFile, keyed},
		{"security_token_file", c.SecurityTokenFile, sts},
		{"role_arn", c.RoleARN, role},
		{"role_session_name", c.RoleSessionName, role},
		{"external_id", c.ExternalID, role},
		{"policy", c.Policy, role},
		{"session_duration", duration, role},
		{"sts_region", c.STSRegion, role},
		{"role_name", c.RoleName, []string{credECSRAMRole}},
		{"profile", c.Profile, []string{credCLIProfile}},
	}
}

// Validate checks the shape of c: its type, that every key it sets
// applies to that type, and the syntax of each reference. It reads no
// variable and no file: Provider does, when the daemon starts. Errors
// name the key, never a value that could be a secret.
func (c Credentials) Validate() []error {
	var errs []error
	if keys, instead := c.inline(); len(keys) > 0 {
		for i, k := range keys {
			errs = append(errs, fmt.Errorf("%s: secrets are never written in the configuration file; name where to read it with %s", k, instead[i]))
		}
	}
	types := []string{credAccessKey, credSTS, credRAMRoleARN, credECSRAMRole, credCLIProfile}
	if !slices.Contains(types, c.Type) {
		want := "access_key, sts, ram_role_arn, ecs_ram_role or cli_profile"
		if c.Type == "" {
			return append(errs, fmt.Errorf("type: required: %s", want))
		}
		return append(errs, fmt.Errorf("type %q: want %s", c.Type, want))
	}
	for _, k := range c.keys() {
		if k.value == "" {
			continue
		}
		if err := sensitive.Printable(k.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k.name, err))
		}
		if !slices.Contains(k.types, c.Type) {
			errs = append(errs, fmt.Errorf("%s: not used by type %s (it is for %s)", k.name, c.Type, strings.Join(k.types, ", ")))
		}
	}
	switch c.Type {
	case credAccessKey, credSTS, credRAMRoleARN:
		errs = append(errs, c.validateKeys()...)
	case credCLIProfile:
		if c.Profile == "" {
			errs = append(errs, errors.New("profile: required: the name of a profile in the Alibaba Cloud CLI's ~/.aliyun/config.json"))
		}
	case credECSRAMRole:
		if c.RoleName != "" && !validRoleName(c.RoleName) {
			errs = append(errs, errors.New("role_name: want 1 to 64 characters of [A-Za-z0-9._-]"))
		}
	}
	if c.Type == credRAMRoleARN {
		errs = append(errs, c.validateRole()...)
	}
	return errs
}

// SendsSecurityToken reports whether the account's calls carry an STS
// security token, which plain http would send in the clear: types sts,
// ram_role_arn and ecs_ram_role.
func (c Credentials) SendsSecurityToken() bool {
	switch c.Type {
	case credSTS, credRAMRoleARN, credECSRAMRole:
		return true
	}
	return false
}

// validateKeys checks where access_key, sts and ram_role_arn find their
// keys.
func (c Credentials) validateKeys() []error {
	var errs []error
	token := c.Type == credSTS
	switch c.Source {
	case sourceEnv:
		for _, k := range []struct{ name, value string }{
			{"access_key_id_env", c.AccessKeyIDEnv}, {"access_key_secret_env", c.AccessKeySecretEnv}, {"security_token_env", c.SecurityTokenEnv},
		} {
			if k.value != "" && !validEnvName(k.value) {
				errs = append(errs, fmt.Errorf("%s: want the name of an environment variable, [A-Za-z_][A-Za-z0-9_]*", k.name))
			}
		}
		for _, k := range []struct{ name, value string }{
			{"access_key_id_file", c.AccessKeyIDFile}, {"access_key_secret_file", c.AccessKeySecretFile}, {"security_token_file", c.SecurityTokenFile},
		} {
			if k.value != "" {
				errs = append(errs, fmt.Errorf("%s: not used with source env (use source file)", k.name))
			}
		}
	case sourceFile:
		for _, k := range []struct{ name, value string }{
			{"access_key_id_env", c.AccessKeyIDEnv}, {"access_key_secret_env", c.AccessKeySecretEnv}, {"security_token_env", c.SecurityTokenEnv},
		} {
			if k.value != "" {
				errs = append(errs, fmt.Errorf("%s: not used with source file (use source env)", k.name))
			}
		}
		required := []struct{ name, value string }{{"access_key_id_file", c.AccessKeyIDFile}, {"access_key_secret_file", c.AccessKeySecretFile}}
		if token {
			required = append(required, struct{ name, value string }{"security_token_file", c.SecurityTokenFile})
		}
		for _, k := range required {
			if k.value == "" {
				errs = append(errs, fmt.Errorf("%s: required with source file: the path of a file that holds only that value", k.name))
			}
		}
	case "":
		errs = append(errs, fmt.Errorf("source: required for type %s: env (ALIBABA_CLOUD_* or named variables) or file", c.Type))
	default:
		errs = append(errs, fmt.Errorf("source %q: want env or file", c.Source))
	}
	return errs
}

// validateRole checks the AssumeRole settings of ram_role_arn.
func (c Credentials) validateRole() []error {
	var errs []error
	if c.RoleARN == "" {
		errs = append(errs, errors.New("role_arn: required: the role to assume, acs:ram::<account id>:role/<name>"))
	} else if rest, ok := strings.CutPrefix(c.RoleARN, "acs:ram::"); !ok || !strings.Contains(rest, ":role/") {
		errs = append(errs, errors.New("role_arn: want acs:ram::<account id>:role/<name>"))
	}
	if n := c.RoleSessionName; n != "" && !validSessionName(n) {
		errs = append(errs, errors.New("role_session_name: want 2 to 64 characters of [A-Za-z0-9.@_-]"))
	}
	if c.Policy != "" && !json.Valid([]byte(c.Policy)) {
		errs = append(errs, errors.New("policy: want a JSON policy document"))
	}
	if d := c.SessionDuration; d != 0 && (d < 15*time.Minute || d > time.Hour || d%time.Second != 0) {
		errs = append(errs, fmt.Errorf("session_duration %v: want whole seconds from 15m to 1h (the SDK's bounds)", d))
	}
	if c.STSRegion != "" && !ValidRegion(c.STSRegion) {
		errs = append(errs, fmt.Errorf("sts_region %q: want a region id such as cn-hangzhou", c.STSRegion))
	}
	return errs
}

// validEnvName reports whether name can name an environment variable.
func validEnvName(name string) bool {
	for i, c := range []byte(name) {
		if !(c == '_' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return name != ""
}

// validSessionName reports whether STS takes name as a RoleSessionName.
func validSessionName(name string) bool {
	return len(name) >= 2 && len(name) <= 64 && strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.@_-") == ""
}

// validRoleName reports whether name can be a RAM role's name.
func validRoleName(name string) bool {
	return len(name) >= 1 && len(name) <= 64 && strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == ""
}

// Provider builds the SDK credentials provider of the account named
// account (which names the RAM role's session by default), reading the
// environment variables (through getenv) and the files c names.
//
// Call it once per account, as the daemon starts, and give the result to
// every lister of the account's shards: it is safe for concurrent use, and
// sharing it means one AssumeRole (or metadata call) per account, not per
// shard. Its errors name the account and the variable or file, never a
// value.
func (c Credentials) Provider(account string, getenv func(string) string) (*SharedProvider, error) {
	cred, err := c.sdkCredential(account, getenv)
	if err != nil {
		return nil, fmt.Errorf("account %q: credentials: %w", account, err)
	}
	p, err := auth.ToCredentialsProvider(cred)
	if err != nil {
		return nil, fmt.Errorf("account %q: credentials: %w", account, err)
	}
	return &SharedProvider{p: p}, nil
}

// sdkCredential resolves c into one of the SDK's credential types:
// *credentials.AccessKeyCredential, *StsTokenCredential,
// *RamRoleArnCredential, *EcsRamRoleCredential, or for a CLI profile the
// SDK's *CLIProfileCredentialsProvider.
func (c Credentials) sdkCredential(account string, getenv func(string) string) (auth.Credential, error) {
	switch c.Type {
	case credAccessKey:
		id, secret, err := c.keyPair(getenv)
		if err != nil {
			return nil, err
		}
		return credentials.NewAccessKeyCredential(id, secret), nil
	case credSTS:
		id, secret, err := c.keyPair(getenv)
		if err != nil {
			return nil, err
		}
		token, err := c.read(getenv, "security_token", c.SecurityTokenEnv, envSecurityToken, c.SecurityTokenFile)
		if err != nil {
			return nil, err
		}
		return credentials.NewStsTokenCredential(id, secret, token), nil
	case credRAMRoleARN:
		id, secret, err := c.keyPair(getenv)
		if err != nil {
			return nil, err
		}
		session := c.RoleSessionName
		if session == "" {
			session = "capoller-" + account
			session = session[:min(len(session), 64)]
		}
		return &credentials.RamRoleArnCredential{AccessKeyId: id, AccessKeySecret: secret, RoleArn: c.RoleARN,
			RoleSessionName: session, RoleSessionExpiration: int(c.SessionDuration / time.Second), Policy: c.Policy,
			StsRegion: c.STSRegion, ExternalId: c.ExternalID}, nil
	case credECSRAMRole:
		return credentials.NewEcsRamRoleCredential(c.RoleName), nil
	case credCLIProfile:
		if err := checkCLIProfile(c.Profile, getenv); err != nil {
			return nil, err
		}
		return credentials.NewCLIProfileCredentialsProviderBuilder().WithProfileName(c.Profile).Build(), nil
	}
	return nil, fmt.Errorf("type %q: want access_key, sts, ram_role_arn, ecs_ram_role or cli_profile", c.Type)
}

// keyPair reads the access key id and secret.
func (c Credentials) keyPair(getenv func(string) string) (id, secret string, err error) {
	if id, err = c.read(getenv, "access_key_id", c.AccessKeyIDEnv, envAccessKeyID, c.AccessKeyIDFile); err != nil {
		return "", "", err
	}
	if secret, err = c.read(getenv, "access_key_secret", c.AccessKeySecretEnv, envAccessKeySecret, c.AccessKeySecretFile); err != nil {
		return "", "", err
	}
	return id, secret, nil
}

// read reads one value from where c's source says: the variable env (or
// fallback, when env is empty) or the file. An empty value is an error
// naming the variable or file.
func (c Credentials) read(getenv func(string) string, what, env, fallback, file string) (string, error) {
	if c.Source == sourceFile {
		raw, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s_file: %w", what, err) // the *PathError names the file, not its content
		}
		v := strings.TrimSpace(string(raw))
		if v == "" {
			return "", fmt.Errorf("%s_file %s: the file is empty", what, file)
		}
		if strings.ContainsAny(v, "\r\n") {
			return "", fmt.Errorf("%s_file %s: want one value, the file has several lines", what, file)
		}
		return v, nil
	}
	if env == "" {
		env = fallback
	}
	v := strings.TrimSpace(getenv(env))
	if v == "" {
		return "", fmt.Errorf("%s: the environment variable %s is empty or unset", what, env)
	}
	return v, nil
}

// checkCLIProfile checks, before the SDK reads it, that the CLI's
// configuration file has the profile: the SDK's own errors quote the whole
// file, secrets and all.
func checkCLIProfile(profile string, getenv func(string) string) error {
	if strings.EqualFold(getenv("ALIBABA_CLOUD_CLI_PROFILE_DISABLED"), "true") {
		return errors.New("profile: CLI profiles are disabled by ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true")
	}
	home := getenv("HOME")
	if home == "" {
		return errors.New("profile: HOME is unset, so the CLI's ~/.aliyun/config.json cannot be found")
	}
	path := filepath.Join(home, ".aliyun", "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("profile: the CLI's configuration: %w", err)
	}
	var conf struct {
		Profiles []struct {
			Name string `json:"name"`
		} `json:"profiles"`
	}
	if err := json.Unmarshal(raw, &conf); err != nil {
		return fmt.Errorf("profile: the CLI's configuration %s is not valid JSON", path)
	}
	var names []string
	for _, p := range conf.Profiles {
		if p.Name == profile {
			return nil
		}
		names = append(names, fmt.Sprintf("%q", p.Name))
	}
	if len(names) == 0 {
		return fmt.Errorf("profile %q: %s has no profiles", profile, path)
	}
	return fmt.Errorf("profile %q: not in %s, which has %s", profile, path, strings.Join(names, ", "))
}

// SharedProvider is the provider [Credentials.Provider] makes: it lets the
// listers of one account, each in its own goroutine, share the SDK's
// provider, whose refreshing kinds (RAM role, ECS RAM role, CLI profile)
// keep their session without a lock.
type SharedProvider struct {
	mu sync.Mutex
	p  CredentialsProvider
}

// GetCredentials returns the provider's credentials, one caller at a time.
func (s *SharedProvider) GetCredentials() (*credentials.Credentials, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p.GetCredentials()
}

// GetProviderName names the provider shared.
func (s *SharedProvider) GetProviderName() string { return s.p.GetProviderName() }
