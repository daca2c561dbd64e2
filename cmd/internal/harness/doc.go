// Package harness is the plumbing capoller's bench and chaos harnesses
// share, written once: free ports, `capoller run` replicas started as
// child processes of a given executable (and stopped, killed, paused,
// measured), their Prometheus metrics, redis-server processes a harness
// can kill and start again, the emulator's two accounts with the
// configuration that hands them to a replica group, and the cleanup of
// what a run wrote (its stream, KV bucket and Redis keys).
//
// It knows nothing of package main: the executable is a path, and every
// replica gets its arguments from the caller.
package harness
