package checkpoint

import (
	"slices"
	"testing"
	"time"
)

// An INFO replication reply of a master with one replica online and one
// still in its first synchronisation, as Redis 7.0 writes it.
const infoMaster = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n" +
	"slave0:ip=127.0.0.1,port=7001,state=online,offset=1234,lag=0\r\n" +
	"slave1:ip=10.0.0.2,port=6380,state=wait_bgsave,offset=0,lag=0\r\n" +
	"master_failover_state:no-failover\r\nmaster_replid:abc123\r\nmaster_replid2:0000000000000000000000000000000000000000\r\n" +
	"master_repl_offset:1234\r\nslave_read_only:1\r\n"

func TestReplicationInfo(t *testing.T) {
	role, id, online := replication(infoMaster)
	if role != "master" || id != "abc123" || !slices.Equal(online, []string{"127.0.0.1:7001"}) {
		t.Errorf("replication(master) = %q, %q, %v", role, id, online)
	}
	role, _, online = replication("# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nslave_read_only:1\r\nslave_priority:100\r\n")
	if role != "slave" || len(online) != 0 {
		t.Errorf("replication(replica) = %q, %v: slave_read_only and slave_priority are not replicas", role, online)
	}
}

// TestReplicaSeen: a write waits for every replica listed online within
// the grace, under the master's replication id; a new id starts afresh.
func TestReplicaSeen(t *testing.T) {
	var s replicaSeen
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const grace = 10 * time.Second
	if n := s.need("m:1", t0, grace); n != 0 {
		t.Fatalf("need of an unknown master = %d", n)
	}
	if n := s.observe("m:1", "id1", []string{"a:1", "b:1"}, t0, grace); n != 2 {
		t.Fatalf("two online: need %d", n)
	}
	if n := s.observe("m:1", "id1", []string{"a:1"}, t0.Add(time.Second), grace); n != 2 {
		t.Errorf("b left a second ago: need %d, want 2 (it may be the one promoted)", n)
	}
	if n := s.need("m:1", t0.Add(grace), grace); n != 2 {
		t.Errorf("need at the grace's end = %d, want 2", n)
	}
	if n := s.observe("m:1", "id1", []string{"a:1"}, t0.Add(grace+time.Second), grace); n != 1 {
		t.Errorf("b left more than the grace ago: need %d, want 1", n)
	}
	if n := s.observe("m:1", "id1", []string{"a:1", "c:1"}, t0.Add(grace+2*time.Second), grace); n != 2 {
		t.Errorf("c joined: need %d, want 2", n)
	}
	if n := s.observe("m:1", "id2", nil, t0.Add(grace+3*time.Second), grace); n != 0 {
		t.Errorf("a new replication id (promoted, restarted) without replicas: need %d, want 0", n)
	}
	if n := s.observe("m:2", "x", []string{"a:1"}, t0, -time.Second); n != 1 {
		t.Errorf("a negative grace still waits for the replicas online now: need %d", n)
	}
	if n := s.observe("m:2", "x", nil, t0.Add(time.Millisecond), -time.Second); n != 0 {
		t.Errorf("a negative grace forgets a replica once it is not listed: need %d", n)
	}
}
