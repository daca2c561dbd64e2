package harness

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"go.uber.org/zap"

	"github.com/capoller/capoller/poller"
)

// StopAtEnv arms a fault for tests: CAPOLLER_TEST_STOP_AT=<step> makes
// the process stop itself (SIGSTOP) the first time a batch reaches that
// step (fetched, staged, published or committed), so that a test can
// resume it past its lease. Never set it in production.
const StopAtEnv = "CAPOLLER_TEST_STOP_AT"

// FaultEnv arms a fault for tests and `capoller chaos`:
// CAPOLLER_TEST_FAULT_AT=<step>:<kill|stop>[:<n>] makes the process kill
// itself (SIGKILL) or stop itself (SIGSTOP, until SIGCONT) the n-th time
// (default the first) a batch reaches step, so that a harness can land a
// crash or a pause at every step of the cycle. It wins over StopAtEnv.
// Never set it in production.
const FaultEnv = "CAPOLLER_TEST_FAULT_AT"

// Fault is the fault the test environment arms.
type Fault struct {
	Step   poller.Step
	Action string // "kill" or "stop"
	Nth    int
}

// ParseFault reads FaultEnv's value, or StopAtEnv's as "<step>:stop:1";
// the zero Fault means none.
func ParseFault(fault, stopAt string) (Fault, error) {
	if fault == "" {
		if stopAt == "" {
			return Fault{}, nil
		}
		fault = stopAt + ":stop"
	}
	parts := strings.Split(fault, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Fault{}, fmt.Errorf("%s=%q: want <step>:<kill|stop>[:<n>]", FaultEnv, fault)
	}
	h := Fault{Step: poller.Step(parts[0]), Action: parts[1], Nth: 1}
	switch h.Step {
	case poller.StepFetched, poller.StepStaged, poller.StepPublished, poller.StepCommitted:
	default:
		return Fault{}, fmt.Errorf("%s: unknown step %q (want fetched, staged, published or committed)", FaultEnv, parts[0])
	}
	if h.Action != "kill" && h.Action != "stop" {
		return Fault{}, fmt.Errorf("%s: unknown action %q (want kill or stop)", FaultEnv, h.Action)
	}
	if len(parts) == 3 {
		n, err := strconv.Atoi(parts[2])
		if err != nil || n < 1 {
			return Fault{}, fmt.Errorf("%s: the count %q is not a positive integer", FaultEnv, parts[2])
		}
		h.Nth = n
	}
	return h, nil
}

// HookFromEnv returns the poller hook the environment arms (FaultEnv or
// StopAtEnv), or nil. Build it once per process: its count of steps spans
// every shard the process polls.
func HookFromEnv(log *zap.Logger) func(poller.Step) {
	f, err := ParseFault(os.Getenv(FaultEnv), os.Getenv(StopAtEnv))
	if err != nil {
		log.Warn("a test hook is set but invalid; it is ignored", zap.Error(err))
		return nil
	}
	if f.Step == "" {
		return nil
	}
	log.Warn("a TEST HOOK is armed: this process kills or stops itself at a step of a batch; never set it in production",
		zap.String("step", string(f.Step)), zap.String("action", f.Action), zap.Int("nth", f.Nth))
	var mu sync.Mutex
	seen := 0
	return func(s poller.Step) {
		if s != f.Step {
			return
		}
		mu.Lock()
		defer mu.Unlock() // held while stopped: no other batch runs on into a step meanwhile
		seen++
		if seen != f.Nth {
			return
		}
		log.Warn("test hook: firing", zap.String("step", string(s)), zap.String("action", f.Action), zap.Int("nth", f.Nth))
		_ = log.Sync()
		if f.Action == "kill" {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL cannot be caught: the process ends here
		}
		// A signal to oneself takes effect soon, not at once: wait for the
		// SIGCONT, or this goroutine could run on into the next step before
		// the process stops.
		cont := make(chan os.Signal, 1)
		signal.Notify(cont, syscall.SIGCONT)
		defer signal.Stop(cont)
		_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
		<-cont
		log.Warn("test hook: resumed", zap.String("step", string(s)))
	}
}
