// Package bench is `capoller bench`, which sizes a deployment. It runs the
// Cloud Assistant emulator in process, starts `capoller run` (one process
// per strategy, or a replica group) as a child process of the executable
// it is given, against real Redis and NATS, drives new invocations, and
// measures API calls, detection latency, Redis and NATS work, CPU, memory
// and the checkpoint store's size; then the pipeline's throughput, held
// against raw JetStream publishing on the same connection (the yardstick).
//
// Run returns a Report, which the CLI prints (WriteText) or encodes as
// JSON. The shared plumbing (replica processes, ports, metrics, cleanup)
// is package harness's.
package bench
