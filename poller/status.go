package poller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
)

// GroupStatus is the replica group as its store holds it, read by
// [ReadGroupStatus]: what `capoller status` prints (as JSON, these fields).
type GroupStatus struct {
	At       time.Time      `json:"at"`
	Replicas []GroupReplica `json:"replicas"`
	Shards   []GroupShard   `json:"shards"`
}

// GroupReplica is one live replica of the group.
type GroupReplica struct {
	ID       string    `json:"id"`
	Host     string    `json:"host,omitempty"`
	PID      int       `json:"pid,omitempty"`
	Version  string    `json:"version,omitempty"`
	Started  time.Time `json:"started"`
	LastSeen time.Time `json:"lastSeen"`
	// Shards is how many shards it holds; Lists how many its
	// configuration lists (null for a replica of an earlier version,
	// which did not say).
	Shards int  `json:"shards"`
	Lists  *int `json:"lists"`
	// Withdrawn says why it takes no shard now; Excluded are shards it
	// leaves to the others for a while (their leases were refused to it).
	Withdrawn string   `json:"withdrawn,omitempty"`
	Excluded  []string `json:"excluded,omitempty"`
}

// GroupShard is one shard of the group: who lists it, who holds it, how
// its last cycles went.
type GroupShard struct {
	Shard string `json:"shard"`
	// Owner is empty when no live lease holds the shard.
	Owner string `json:"owner"`
	// ListedBy are the live replicas whose configuration lists the shard
	// (one of an earlier version, which does not say, is taken to list
	// this configuration's, as the group takes it): none means nobody
	// polls it (LastListed says when, and by which replica, a
	// configuration last listed it).
	ListedBy   []string  `json:"listedBy"`
	LastListed time.Time `json:"lastListed,omitzero"`
	LastLister string    `json:"lastListedBy,omitempty"`
	// LeaseAgeSeconds is how long the owner has held it.
	LeaseAgeSeconds float64   `json:"leaseAgeSeconds"`
	Token           uint64    `json:"token"`
	Expires         time.Time `json:"expires,omitzero"`
	LastSuccess     time.Time `json:"lastSuccess,omitzero"`
	LastCycle       time.Time `json:"lastCycle,omitzero"`
	LastError       string    `json:"lastError,omitempty"`
	ReportedBy      string    `json:"reportedBy,omitempty"`
}

// GroupReader is what ReadGroupStatus reads from a store.
type GroupReader interface {
	Members(ctx context.Context) ([]checkpoint.Member, error)
	Listed(ctx context.Context, now time.Time) ([]checkpoint.ListedShard, error)
	Leases(ctx context.Context, shards []diff.Shard) ([]checkpoint.Lease, error)
	Statuses(ctx context.Context, shards []diff.Shard) ([]checkpoint.ShardStatus, error)
}

// ReadGroupStatus reads the group from the store: its live replicas, and every
// shard that this configuration, a live replica's or one within
// checkpoint.ListedMemory listed, sorted by id.
func ReadGroupStatus(ctx context.Context, st GroupReader, configured []diff.Shard, now time.Time) (GroupStatus, error) {
	rep := GroupStatus{At: now.UTC(), Replicas: []GroupReplica{}, Shards: []GroupShard{}}
	members, err := st.Members(ctx)
	if err != nil {
		return rep, fmt.Errorf("read the replicas: %w", err)
	}
	members = slices.DeleteFunc(members, func(m checkpoint.Member) bool { return !now.Before(m.Expires) })
	listed, err := st.Listed(ctx, now)
	if err != nil {
		return rep, fmt.Errorf("read the shards listed: %w", err)
	}
	shards, last, listedBy := shardsKnown(configured, members, listed)
	leases, err := st.Leases(ctx, shards)
	if err != nil {
		return rep, fmt.Errorf("read the leases: %w", err)
	}
	statuses, err := st.Statuses(ctx, shards)
	if err != nil {
		return rep, fmt.Errorf("read the shards' status: %w", err)
	}
	held := map[string]int{}
	for i, s := range shards {
		ss := GroupShard{Shard: s.String(), ListedBy: listedBy[s]}
		if ss.ListedBy == nil {
			ss.ListedBy = []string{}
		}
		if l, ok := last[s]; ok {
			ss.LastListed, ss.LastLister = l.At.UTC(), l.By
		}
		if i < len(leases) {
			l := leases[i]
			ss.Token = l.Token
			if l.Live(now) {
				ss.Owner, ss.Expires = l.Owner, l.Expires.UTC()
				ss.LeaseAgeSeconds = now.Sub(l.Acquired).Seconds()
				held[l.Owner]++
			}
		}
		if i < len(statuses) {
			st := statuses[i]
			ss.LastSuccess, ss.LastCycle, ss.LastError, ss.ReportedBy = st.LastSuccess, st.LastCycle, st.LastError, st.Replica
		}
		rep.Shards = append(rep.Shards, ss)
	}
	for _, m := range members {
		rep.Replicas = append(rep.Replicas, replicaRow(m, held[m.ID]))
	}
	return rep, nil
}

// shardsKnown gathers every shard the status shows, sorted by id: those
// this configuration lists, those a live replica lists, and those listed
// within checkpoint.ListedMemory. It returns, for each, its last listing
// and the replicas that list it.
func shardsKnown(configured []diff.Shard, members []checkpoint.Member, listed []checkpoint.ListedShard) (shards []diff.Shard, last map[diff.Shard]checkpoint.ListedShard, listedBy map[diff.Shard][]string) {
	last = map[diff.Shard]checkpoint.ListedShard{}
	listedBy = map[diff.Shard][]string{}
	for _, l := range listed {
		last[l.Shard.Canonical()] = l
	}
	for _, m := range members {
		lists := m.Lists
		if lists == nil { // an earlier version's: the group takes it to list what this configuration does
			lists = configured
		}
		for _, s := range lists {
			listedBy[s.Canonical()] = append(listedBy[s.Canonical()], m.ID)
		}
	}
	seen := map[diff.Shard]bool{}
	add := func(s diff.Shard) {
		if s = s.Canonical(); !seen[s] {
			seen[s] = true
			shards = append(shards, s)
		}
	}
	for _, s := range configured {
		add(s)
	}
	for s := range listedBy {
		add(s)
	}
	for s := range last {
		add(s)
	}
	slices.SortFunc(shards, func(a, b diff.Shard) int { return strings.Compare(a.String(), b.String()) })
	return shards, last, listedBy
}

// replicaRow is one live replica's line, holding shards leases.
func replicaRow(m checkpoint.Member, shards int) GroupReplica {
	r := GroupReplica{ID: m.ID, Host: m.Host, PID: m.PID, Version: m.Version,
		Started: m.Started.UTC(), LastSeen: m.Seen.UTC(), Shards: shards, Withdrawn: m.Withdrawn}
	if m.Lists != nil {
		n := len(m.Lists)
		r.Lists = &n
	}
	for _, s := range m.Excluded {
		r.Excluded = append(r.Excluded, s.String())
	}
	return r
}
