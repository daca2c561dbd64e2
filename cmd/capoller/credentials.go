package main

import (
	"fmt"
	"slices"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist"
)

// credential builds the SDK credentials provider of the named account
// (see cloudassist.Credentials.Provider), reading the environment
// variables (through getenv) and the files its credentials name. nil
// means the SDK's default chain (ALIBABA_CLOUD_* variables, CLI profile,
// credentials file, ECS RAM role…): that of the default account when no
// accounts are listed, unless the demo gave it static keys.
//
// Call it once per account, as the daemon starts, and give the result to
// every lister of the account's shards: it is safe for concurrent use, and
// sharing it means one AssumeRole (or metadata call) per account, not per
// shard. Its errors name the account and the variable or file, never a
// value.
func (c config) credential(account string, getenv func(string) string) (cloudassist.CredentialsProvider, error) {
	if len(c.Accounts) == 0 {
		if account != diff.DefaultAccount {
			return nil, fmt.Errorf("no account %q: without accounts in the configuration file there is only %q", account, diff.DefaultAccount)
		}
		if c.accessKeyID != "" {
			return cloudassist.StaticCredentials(c.accessKeyID, c.accessKeySecret), nil
		}
		return nil, nil
	}
	i := slices.IndexFunc(c.Accounts, func(a accountConfig) bool { return a.Name == account })
	if i < 0 {
		return nil, fmt.Errorf("no account %q in the configuration file", account)
	}
	p, err := c.Accounts[i].Credentials.Provider(account, getenv)
	if err != nil {
		return nil, err // a nil *SharedProvider would be a non-nil provider
	}
	return p, nil
}
