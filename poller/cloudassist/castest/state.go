package castest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
)

// savedState is the emulator's persistent form.
type savedState struct {
	Seq         uint64        `json:"seq"`
	Instances   []*Instance   `json:"instances"`
	Invocations []*invocation `json:"invocations"`
}

// SaveState writes the fleet and every invocation, so that a later emulator
// can carry on where this one stopped (the demo uses it to resume).
func (s *Server) SaveState(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.opts.Now())
	var all []*invocation
	for _, list := range s.lists {
		all = append(all, list...)
	}
	slices.SortFunc(all, func(a, b *invocation) int { return cmp.Compare(a.Seq, b.Seq) })
	if err := json.NewEncoder(w).Encode(savedState{Seq: s.seq, Instances: s.fleet, Invocations: all}); err != nil {
		return fmt.Errorf("castest: save state: %w", err)
	}
	return nil
}

// LoadState replaces the emulator's fleet and invocations with saved ones.
// Work that was under way carries on from its saved schedule; steps that
// fell due while the emulator was down happen at their due time.
func (s *Server) LoadState(r io.Reader) error {
	var st savedState
	if err := json.NewDecoder(r).Decode(&st); err != nil {
		return fmt.Errorf("castest: load state: %w", err)
	}
	// State saved before accounts belongs to the default account; state of
	// an account this emulator does not serve is refused, not hidden.
	for _, inst := range st.Instances {
		if inst.Account == "" {
			inst.Account = DefaultAccount
		}
		if !slices.Contains(s.Accounts(), inst.Account) {
			return fmt.Errorf("castest: load state: instance %q belongs to account %q, which is not served", inst.ID, inst.Account)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq, s.fleet = st.Seq, st.Instances
	s.lists = map[string][]*invocation{}
	s.instances = map[string]*Instance{}
	for _, inst := range st.Instances {
		s.instances[inst.ID] = inst
	}
	s.byID = map[string]*invocation{}
	s.queue = s.queue[:0]
	for _, inv := range st.Invocations {
		if inv.Account == "" {
			inv.Account = DefaultAccount
		}
		s.byID[inv.InvokeID] = inv
		key := listKey(inv.Account, inv.Product, inv.Region)
		s.lists[key] = append(s.lists[key], inv)
		if inv.RepeatMode == "" {
			inv.RepeatMode = repeatOnce
		}
		if inv.RepeatMode == repeatPeriod {
			sched, err := parseFrequency(inv.Frequency)
			if err != nil {
				return fmt.Errorf("castest: load state: %s: %w", inv.InvokeID, err)
			}
			inv.sched = sched
		}
		p := parseScript(inv.Content)
		for _, r := range inv.Runs {
			if inst, ok := s.instances[r.InstanceID]; !ok || inst.Account != inv.Account {
				return fmt.Errorf("castest: load state: run of %s on unknown instance %q", inv.InvokeID, r.InstanceID)
			}
			r.inv, r.plan, r.heapIndex = inv, p, -1
			if !r.Due.IsZero() {
				s.schedule(r, r.Due)
			}
		}
	}
	return nil
}
