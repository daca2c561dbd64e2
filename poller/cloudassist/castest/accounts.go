package castest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"time"
)

// DefaultAccount names the account of Options.AccessKeyID: the one the
// emulator served before it had accounts, and the one the Server's own
// methods (Invoke, RunWorkload, Seed) create work in.
const DefaultAccount = "default"

// Account is one more Alibaba Cloud account the emulator serves on the same
// listener: a request signed with its key pair is served from its own
// fleet, its own invocations and its own quota windows, as Alibaba keeps
// accounts apart and throttles each on its own.
type Account struct {
	// Name identifies the account in the truth log, the control plane and
	// instance ids: 1 to 64 characters of [A-Za-z0-9_-], not "default".
	Name string `json:"name"`
	// AccessKeyID and AccessKeySecret are the account's key pair; both are
	// required, and no two accounts share an access key id.
	AccessKeyID     string `json:"-"`
	AccessKeySecret string `json:"-"`
	// SecurityToken, if set, is the STS token every request of the account
	// must carry (see Options.SecurityToken).
	SecurityToken string `json:"-"`
	// UID is the Alibaba Cloud account id (16 digits) that the account's
	// EventBridge events carry as aliyunaccountid; "" derives a stable one
	// from Name, so that a restarted emulator pushes the same ids.
	UID string `json:"uid,omitempty"`
}

// accountUID derives a stable 16-digit account id from an account's name,
// for an account configured without one: Alibaba's ids are 16 digits
// that do not start with 0.
func accountUID(name string) string {
	sum := sha256.Sum256([]byte("uid/" + name))
	b := make([]byte, 16)
	b[0] = '1' + sum[0]%9
	for i := 1; i < len(b); i++ {
		b[i] = '0' + sum[i]%10
	}
	return string(b)
}

// validUID reports whether uid looks like an Alibaba Cloud account id:
// 16 decimal digits.
func validUID(uid string) bool {
	if len(uid) != 16 {
		return false
	}
	for _, c := range []byte(uid) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// validAccountName reports whether name may name an account: 1 to 64
// characters of [A-Za-z0-9_-], a token of a shard id.
func validAccountName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// accounts checks opts' accounts and returns them all, the default one
// first.
func (o Options) accounts() ([]Account, error) {
	all := []Account{{Name: DefaultAccount, AccessKeyID: o.AccessKeyID, AccessKeySecret: o.AccessKeySecret, SecurityToken: o.SecurityToken, UID: o.UID}}
	if all[0].UID == "" {
		all[0].UID = accountUID(DefaultAccount)
	}
	if !validUID(all[0].UID) {
		return nil, fmt.Errorf("castest: uid %q of the default account: want 16 digits", all[0].UID)
	}
	for i, a := range o.Accounts {
		if a.UID == "" {
			a.UID = accountUID(a.Name)
		}
		switch {
		case a.Name == DefaultAccount:
			return nil, fmt.Errorf("castest: accounts[%d]: %q is the account of Options.AccessKeyID", i, a.Name)
		case !validAccountName(a.Name):
			return nil, fmt.Errorf("castest: accounts[%d]: name %q: want 1 to 64 characters of [A-Za-z0-9_-]", i, a.Name)
		case a.AccessKeyID == "" || a.AccessKeySecret == "":
			return nil, fmt.Errorf("castest: account %q: an access key id and secret are required", a.Name)
		case !validUID(a.UID):
			return nil, fmt.Errorf("castest: account %q: uid %q: want 16 digits", a.Name, a.UID)
		}
		for _, b := range all {
			if b.Name == a.Name {
				return nil, fmt.Errorf("castest: account %q is listed twice", a.Name)
			}
			if b.AccessKeyID == a.AccessKeyID {
				return nil, fmt.Errorf("castest: accounts %q and %q have the same access key id", b.Name, a.Name)
			}
		}
		all = append(all, a)
	}
	return all, nil
}

// accountOf returns the account an access key id belongs to.
func (s *Server) accountOf(accessKeyID string) (Account, bool) {
	i := slices.IndexFunc(s.accounts, func(a Account) bool { return a.AccessKeyID == accessKeyID })
	if i < 0 {
		return Account{}, false
	}
	return s.accounts[i], true
}

// uidOf returns an account's UID, or "" for an account not served.
func (s *Server) uidOf(name string) string {
	for _, a := range s.accounts {
		if a.Name == name {
			return a.UID
		}
	}
	return ""
}

// Accounts returns the names of the accounts served, "default" first.
func (s *Server) Accounts() []string {
	names := make([]string, len(s.accounts))
	for i, a := range s.accounts {
		names[i] = a.Name
	}
	return names
}

// AccountHandle creates work in, and observes, one account of a Server.
// Its methods are those of the Server, limited to the account.
type AccountHandle struct {
	s    *Server
	name string
}

// Account returns the handle of the named account (DefaultAccount for the
// one of Options.AccessKeyID). For a name the server does not serve, the
// handle's methods that can fail say so, and the others return nothing.
func (s *Server) Account(name string) *AccountHandle {
	return &AccountHandle{s: s, name: name}
}

// Name is the account's name.
func (a *AccountHandle) Name() string { return a.name }

// UID is the account's Alibaba Cloud account id, as its EventBridge events
// carry it; "" for an account the server does not serve.
func (a *AccountHandle) UID() string { return a.s.uidOf(a.name) }

// known reports an error unless the account is served.
func (a *AccountHandle) known() error {
	if !slices.ContainsFunc(a.s.accounts, func(acc Account) bool { return acc.Name == a.name }) {
		return fmt.Errorf("castest: no account %q", a.name)
	}
	return nil
}

// Invoke runs script once on ECS instances of the account in region, as
// RunCommand would, and returns the invocation id. Instances of another
// account are not found, as Alibaba answers.
func (a *AccountHandle) Invoke(region string, instanceIDs []string, script string, timeoutSeconds int64) (string, error) {
	if err := a.known(); err != nil {
		return "", err
	}
	inv, e := a.s.createInvocation(ProductECS, region, instanceIDs,
		invocationSpec{Account: a.name, Type: "RunShellScript", Content: script, Timeout: timeoutSeconds})
	if e != nil {
		return "", e
	}
	return inv.InvokeID, nil
}

// Command is a RunCommand for RunCommand: what the API's parameters of
// the same names say.
type Command struct {
	// Script is the CommandContent, in plain text (see the package
	// documentation for the language).
	Script string
	// Timeout in seconds; default 60.
	Timeout int64
	// OssOutputDelivery, oss://BUCKET[/PREFIX], delivers each run's output
	// to OSS; "" delivers nothing.
	OssOutputDelivery string
}

// RunCommand runs c once on ECS instances of the account in region, as
// the RunCommand API would, and returns the invocation id.
func (a *AccountHandle) RunCommand(region string, instanceIDs []string, c Command) (string, error) {
	if err := a.known(); err != nil {
		return "", err
	}
	if c.Timeout == 0 {
		c.Timeout = 60
	}
	inv, e := a.s.createInvocation(ProductECS, region, instanceIDs, invocationSpec{Account: a.name, Type: "RunShellScript",
		Content: c.Script, Timeout: c.Timeout, OssOutputDelivery: c.OssOutputDelivery})
	if e != nil {
		return "", e
	}
	return inv.InvokeID, nil
}

// RunWorkload runs a simulated operator (see Server.RunWorkload) on the
// account's ECS instances until ctx ends.
func (a *AccountHandle) RunWorkload(ctx context.Context, opts WorkloadOptions) {
	if a.known() != nil {
		return
	}
	a.s.runWorkload(ctx, a.name, opts)
}

// Seed creates a bulk history (see Server.Seed) in the account.
func (a *AccountHandle) Seed(opts SeedOptions) error {
	if err := a.known(); err != nil {
		return err
	}
	return a.s.seed(a.name, opts)
}

// Instances returns the account's fleet.
func (a *AccountHandle) Instances() []Instance {
	return slices.DeleteFunc(a.s.Instances(), func(i Instance) bool { return i.Account != a.name })
}

// Truth returns every status change made in the account so far, in order.
func (a *AccountHandle) Truth() []TruthEntry {
	return slices.DeleteFunc(a.s.Truth(), func(e TruthEntry) bool { return e.Account != a.name })
}

// Calls reports how many signed API calls of the account each action
// received.
func (a *AccountHandle) Calls() map[string]int { return a.s.callsOf(a.name) }

// Throttled reports how many calls of the account each action's quota
// refused.
func (a *AccountHandle) Throttled() map[string]int { return a.s.throttledOf(a.name) }

// CallLog returns the arrival time of every admitted signed call of action
// in the account.
func (a *AccountHandle) CallLog(action string) []time.Time { return a.s.callLogOf(a.name, action, "") }

// InvokeSWAS runs script once on Simple Application Server instances of
// the account in region, as the SWAS RunCommand would, and returns the
// invocation id.
func (a *AccountHandle) InvokeSWAS(region string, instanceIDs []string, script string, timeoutSeconds int64) (string, error) {
	if err := a.known(); err != nil {
		return "", err
	}
	inv, e := a.s.createInvocation(ProductSWAS, region, instanceIDs,
		invocationSpec{Account: a.name, Type: "RunShellScript", Content: script, Timeout: timeoutSeconds})
	if e != nil {
		return "", e
	}
	return inv.InvokeID, nil
}

// Fleet returns the ids of the account's instances by region and product
// (ProductECS, ProductSWAS), for drivers that spread work over a fleet.
func (a *AccountHandle) Fleet() map[string]map[string][]string {
	out := map[string]map[string][]string{}
	for _, inst := range a.Instances() {
		if out[inst.Region] == nil {
			out[inst.Region] = map[string][]string{}
		}
		out[inst.Region][inst.Product] = append(out[inst.Region][inst.Product], inst.ID)
	}
	return out
}

// InvokePeriodic runs script on ECS instances of the account in region
// again and again, as RunCommand with RepeatMode=Period and frequency (for
// instance "rate(2s)") would, until Stop; it returns the invocation id.
func (a *AccountHandle) InvokePeriodic(region string, instanceIDs []string, script, frequency string, timeoutSeconds int64) (string, error) {
	if err := a.known(); err != nil {
		return "", err
	}
	inv, e := a.s.createInvocation(ProductECS, region, instanceIDs, invocationSpec{Account: a.name, Type: "RunShellScript",
		Content: script, Timeout: timeoutSeconds, RepeatMode: repeatPeriod, Frequency: frequency})
	if e != nil {
		return "", e
	}
	return inv.InvokeID, nil
}

// Stop stops an invocation of the account on every instance, as
// StopInvocation (ECS) or the SWAS equivalent would: product is ProductECS
// or ProductSWAS.
func (a *AccountHandle) Stop(product, region, invokeID string) error {
	if err := a.known(); err != nil {
		return err
	}
	if e := a.s.stopInvocation(a.name, product, region, invokeID, nil); e != nil {
		return e
	}
	return nil
}
