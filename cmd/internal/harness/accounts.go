package harness

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// Accounts are the emulator's two accounts of a replica group: "prod" (the
// emulator's default account) and "staging", each with a fresh key pair,
// which the replicas read from the environment.
type Accounts struct {
	label string               // names the keys and the variables: bench, chaos
	keys  map[string][2]string // account → key id, secret
}

// NewAccounts draws the two key pairs; label ("bench", "chaos") shows in
// the key ids and the variables' names.
func NewAccounts(label string) Accounts {
	return Accounts{label: label, keys: map[string][2]string{
		"prod":    {"LTAI" + label + "prod" + RandomHex(3), RandomHex(12)},
		"staging": {"LTAI" + label + "stg" + RandomHex(3), RandomHex(12)},
	}}
}

// Names are the accounts' names, prod first.
func (a Accounts) Names() []string { return []string{"prod", "staging"} }

// Emulator returns o with the accounts' key pairs: prod's as the
// emulator's default account, staging as another.
func (a Accounts) Emulator(o castest.Options) castest.Options {
	o.AccessKeyID, o.AccessKeySecret = a.keys["prod"][0], a.keys["prod"][1]
	o.Accounts = []castest.Account{{Name: "staging", AccessKeyID: a.keys["staging"][0], AccessKeySecret: a.keys["staging"][1]}}
	return o
}

// WriteConfig writes dir/capoller.yaml: both accounts, ECS and SWAS in
// every region, their key pairs read from variables that env sets (with
// the ECS metadata service off, which no emulator has).
func (a Accounts) WriteConfig(dir string, regions []string) (file string, env []string, err error) {
	yaml := "accounts:\n"
	env = []string{"ALIBABA_CLOUD_ECS_METADATA_DISABLED=true"}
	prefix := strings.ToUpper(a.label)
	for _, name := range a.Names() {
		v := prefix + "_" + strings.ToUpper(name)
		yaml += fmt.Sprintf("  - name: %s\n    credentials: {type: access_key, source: env, access_key_id_env: %s_AK, access_key_secret_env: %s_SK}\n    regions: [%s]\n    sources: [ecs, swas]\n",
			name, v, v, strings.Join(regions, ", "))
		env = append(env, v+"_AK="+a.keys[name][0], v+"_SK="+a.keys[name][1])
	}
	file = filepath.Join(dir, "capoller.yaml")
	return file, env, os.WriteFile(file, []byte(yaml), 0o600)
}

// Shards are the shards of that configuration: by account, region, then
// ECS and SWAS.
func (a Accounts) Shards(regions []string) []diff.Shard {
	var out []diff.Shard
	for _, name := range a.Names() {
		for _, r := range regions {
			out = append(out, diff.Shard{Account: name, Source: diff.SourceECS, Region: r}, diff.Shard{Account: name, Source: diff.SourceSWAS, Region: r})
		}
	}
	return out
}

// RunName names a run's stream, CAPOLLER_<kind>_<random>, and returns it
// with its lower-case form, the run's subject prefix (and, with a colon,
// its key prefix).
func RunName(kind string) (stream, prefix string) {
	stream = "CAPOLLER_" + kind + "_" + strings.ToUpper(RandomHex(4))
	return stream, strings.ToLower(stream)
}

// RandomHex is n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
