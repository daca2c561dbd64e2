package harness

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ReplicaOptions says how to start a `capoller run` replica.
type ReplicaOptions struct {
	// Executable is the capoller binary; in tests, the test binary, which
	// acts as capoller through its TestMain.
	Executable string
	// Args are the process's arguments ("run" first), without
	// --replica-id and --metrics-addr, which StartReplica adds.
	Args []string
	// ID is the replica's --replica-id; empty: none is given.
	ID string
	// Env is the process's whole environment.
	Env []string
	// Stdout and Stderr take its output; nil discards it.
	Stdout, Stderr io.Writer
}

// Replica is a running `capoller run` child process, serving /metrics on
// an address of its own.
type Replica struct {
	ID          string
	MetricsAddr string

	cmd  *exec.Cmd
	done chan struct{}
}

// StartReplica starts a replica on a free metrics address. It ends when
// ctx does (SIGKILL), or by the Replica's methods; Done closes once it
// exited and was waited for.
func StartReplica(ctx context.Context, o ReplicaOptions) (*Replica, error) {
	name := "capoller run"
	if o.ID != "" {
		name = "replica " + o.ID
	}
	if o.Executable == "" {
		return nil, fmt.Errorf("start %s: no executable", name)
	}
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	args := slices.Clone(o.Args)
	if o.ID != "" {
		args = append(args, "--replica-id", o.ID)
	}
	cmd := exec.CommandContext(ctx, o.Executable, append(args, "--metrics-addr", addr)...)
	cmd.Env, cmd.Stdout, cmd.Stderr = o.Env, o.Stdout, o.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	r := &Replica{ID: o.ID, MetricsAddr: addr, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(r.done)
	}()
	return r, nil
}

// Done is closed once the process exited.
func (r *Replica) Done() <-chan struct{} { return r.done }

// ExitState is how the process ended; nil before Done is closed.
func (r *Replica) ExitState() *os.ProcessState {
	select {
	case <-r.done:
		return r.cmd.ProcessState
	default:
		return nil
	}
}

// KilledBy reports whether the process ended by sig.
func (r *Replica) KilledBy(sig syscall.Signal) bool {
	ws, ok := r.ExitState().Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// Signal sends sig to the process.
func (r *Replica) Signal(sig os.Signal) error { return r.cmd.Process.Signal(sig) }

// Kill ends the process (SIGKILL) and waits until it is gone.
func (r *Replica) Kill() error {
	err := r.cmd.Process.Kill()
	<-r.done
	return err
}

// Stop ends the process as an operator would (SIGTERM) and waits for it.
func (r *Replica) Stop() {
	_ = r.Signal(syscall.SIGTERM)
	<-r.done
}

// StopReplicas ends replicas: SIGCONT (one stopped by SIGSTOP would not
// act on the SIGTERM), SIGTERM, and SIGKILL to every one still running
// after grace; it returns once each exited.
func StopReplicas(grace time.Duration, replicas ...*Replica) {
	for _, r := range replicas {
		_ = r.Signal(syscall.SIGCONT)
		_ = r.Signal(syscall.SIGTERM)
	}
	deadline := time.After(grace)
	for _, r := range replicas {
		select {
		case <-r.done:
		case <-deadline:
			for _, x := range replicas {
				_ = x.cmd.Process.Kill()
			}
			<-r.done
		}
	}
}

// Metrics scrapes the replica's /metrics.
func (r *Replica) Metrics(ctx context.Context) (Metrics, error) {
	return ScrapeMetrics(ctx, r.MetricsAddr)
}

// Stopped reports whether the process is stopped (SIGSTOP), from /proc
// (Linux).
func (r *Replica) Stopped() bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.cmd.Process.Pid))
	if err != nil {
		return false
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] == 'T'
}

// PeakRSSMiB reads the live process's own peak resident set (VmHWM). The
// rusage of a waited-for child is no good here: Go starts children by
// clone(CLONE_VM), and Linux then counts the parent's peak — the harness,
// with its emulator — as the child's.
func (r *Replica) PeakRSSMiB() float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			if err == nil {
				return kib / 1024
			}
		}
	}
	return 0
}

// ReplicaIndex is the index in ids of the replica a lease owner names,
// and whether one does: owners are the --replica-id, a dash and a random
// suffix (chaos-2-1a2b3c).
func ReplicaIndex(ids []string, owner string) (int, bool) {
	for i, id := range ids {
		if strings.HasPrefix(owner, id+"-") {
			return i, true
		}
	}
	return 0, false
}
