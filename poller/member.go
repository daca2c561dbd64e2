package poller

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"

	"github.com/capoller/capoller/checkpoint"
)

// NewMember is this process as a member of a replica group: named by
// name (the host name if none), with a random suffix of its own, so that
// two processes given one name (a Deployment's pods sharing an
// environment), or a replica restarted before its old leases expired, are
// two owners with two fencing tokens, never one.
func NewMember(name, version string) checkpoint.Member {
	m := checkpoint.Member{ID: name, PID: os.Getpid(), Version: version}
	m.Host, _ = os.Hostname()
	m.ID = ReplicaID(name, m.Host)
	return m
}

// ReplicaID is name (host if name is empty) made safe for the store's
// keys, plus a random suffix.
func ReplicaID(name, host string) string {
	if name == "" {
		name = host
	}
	if name == "" {
		name = "capoller"
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '_' || r == '-' || ('0' <= r && r <= '9') || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') {
			return r
		}
		return '-'
	}, name) + "-" + hex.EncodeToString(b)
}

// ReplicaName is the name a replica's id was made from (see ReplicaID).
func ReplicaName(id string) string {
	if i := strings.LastIndexByte(id, '-'); i > 0 {
		return id[:i]
	}
	return id
}
