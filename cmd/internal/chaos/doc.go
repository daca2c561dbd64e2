// Package chaos is `capoller chaos`, the soak that holds capoller's
// promises under faults. It runs the Cloud Assistant emulator with a busy
// fleet, three (Options.Replicas) `capoller run` replicas as child
// processes of the executable it is given, and Redis and NATS of its own
// (one server each, a Redis Cluster or Sentinel, a NATS cluster) or the
// operator's; it draws a schedule of faults from a seed (kills and stops
// of replicas, hooks armed inside the cycle, engine restarts and Redis
// failovers, API faults and behaviours, network partitions through fault
// proxies), applies it, lets the replicas catch up, and checks the whole
// stream against the emulator's ground truth, and each partition against
// the leases it watched.
//
// It owns the schedule (schedule.go, faults.go), the engines
// (engines.go, redisgroup.go), the replicas' slots (replicas.go), the
// faults' application (apply.go), the partitions and their checks
// (partition.go, leases.go, checks.go), the workload, the stream's reader
// and the Report (report.go, text.go). The plumbing it shares with the
// bench is package harness's; whatever needs package main (opening a
// Redis URL, redacting one) comes in through Options.
package chaos
