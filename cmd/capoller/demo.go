package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/hintintake"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/embedded"
)

type demoOptions struct {
	duration  time.Duration
	dataDir   string
	print     string
	interval  time.Duration
	every     time.Duration
	instances int
	natsPort  int
	hints     bool
}

func demoCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo")
	var o demoOptions
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: run until interrupted)")
	fs.StringVar(&o.dataDir, "data-dir", filepath.Join(os.TempDir(), "capoller-demo"), "where the demo keeps NATS data, checkpoints and the emulator's state; run again with the same directory to resume")
	fs.StringVar(&o.print, "print", "pretty", "how to print events: pretty, json or none")
	fs.DurationVar(&o.interval, "interval", 0, "poll interval (default 60s with --hints: the pushes bring the outcomes; 1s without)")
	fs.BoolVar(&o.hints, "hints", true, "the emulator pushes EventBridge's TaskCompleted events to capoller's hints endpoint, as Alibaba does: outcomes within a second at a 60s poll")
	fs.DurationVar(&o.every, "every", 1500*time.Millisecond, "how often the simulated operators run a command")
	fs.IntVar(&o.instances, "instances", 3, "simulated ECS instances")
	fs.IntVar(&o.natsPort, "nats-port", 0, "port of the embedded NATS server (0: any free port)")
	if code, ok := parseArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	switch o.print {
	case "pretty", "json", "none":
	default:
		fmt.Fprintf(stderr, "capoller demo: --print %q: want pretty, json or none\n", o.print)
		return 2
	}
	if err := demo(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "capoller demo: %v\n", err)
		return 1
	}
	return 0
}

func demo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) error {
	if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}

	// The emulator, with this run's throw-away credentials.
	keyID, secret := "LTAIdemo"+randomHex(6), randomHex(16)
	sim, err := castest.New(castest.Options{AccessKeyID: keyID, AccessKeySecret: secret, Instances: o.instances})
	if err != nil {
		return err
	}
	defer sim.Close()
	statePath := filepath.Join(o.dataDir, "casim.json")
	resumed, err := loadState(sim, statePath)
	if err != nil {
		return err
	}
	simURL, err := sim.Start("127.0.0.1:0")
	if err != nil {
		return err
	}

	// NATS with JetStream, in process.
	srv, err := embedded.Run(embedded.Options{StoreDir: filepath.Join(o.dataDir, "nats"), Port: o.natsPort})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	cfg := defaultConfig()
	cfg.Endpoint, cfg.NATSURL, cfg.Checkpoint, cfg.Interval = simURL, srv.URL(), "natskv", o.interval
	cfg.DataDir, cfg.accessKeyID, cfg.accessKeySecret = o.dataDir, keyID, secret
	if err := demoHints(&cfg, sim, o.hints); err != nil {
		return err
	}

	printDemoHeader(stdout, o, cfg, simURL, srv.URL(), resumed)

	// A subscriber, printing events as the stream stores them. It reads the
	// stream, not the subjects: a re-publish that JetStream dropped as a
	// duplicate (after a stop between publish and checkpoint) is not shown.
	nc, err := nats.Connect(srv.URL(), nats.Name("capoller-demo-printer"))
	if err != nil {
		return fmt.Errorf("connect the printer: %w", err)
	}
	defer nc.Close()
	printer, err := publisher.Follow(ctx, nc, publisher.Options{Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, DuplicateWindow: cfg.DuplicateWindow},
		func(m jetstream.Msg) { printEvent(stdout, o.print, m.Subject(), m.Data()) })
	if err != nil {
		return err
	}

	log, err := newLogger("console", "warn", stderr)
	if err != nil {
		return err
	}
	workCtx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); sim.RunWorkload(workCtx, castest.WorkloadOptions{Every: o.every}) }()
	runErr := daemon(ctx, cfg, log, nil)
	stopWork()
	wg.Wait()

	count := printer.Finish(5 * time.Second) // print what was stored before we stop
	if err := saveState(sim, statePath); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%d events this run. State kept in %s: run again with --data-dir %s to resume.\n", count, o.dataDir, o.dataDir)
	if runErr != nil && !errors.Is(runErr, context.Canceled) && !errors.Is(runErr, context.DeadlineExceeded) {
		return runErr
	}
	return nil
}

// loadState resumes the emulator from the state a previous run saved, if
// there is one.
func loadState(sim *castest.Server, path string) (resumed bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return false, nil // a first run
	}
	defer func() { _ = f.Close() }()
	if err := sim.LoadState(f); err != nil {
		return false, fmt.Errorf("resume the emulator from %s: %w", path, err)
	}
	return true, nil
}

// saveState writes the emulator's state atomically (temp file + rename).
func saveState(sim *castest.Server, path string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("save the emulator: %w", err)
	}
	if err := sim.SaveState(f); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save the emulator: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save the emulator: %w", err)
	}
	return nil
}

func printEvent(w io.Writer, mode, subject string, data []byte) {
	switch mode {
	case "none":
		return
	case "json":
		fmt.Fprintf(w, "%s\n", data)
		return
	}
	var ev publisher.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		fmt.Fprintf(w, "undecodable event on %s: %v\n", subject, err)
		return
	}
	d := ev.Data
	from := d.PreviousStatus
	if from == "" {
		from = "(new)"
	}
	who := d.InvokeID
	extra := ""
	if d.InstanceID != "" {
		who += " " + d.InstanceID
		if code, ok := d.ExitCodeOf(); d.Terminal && ok {
			extra = fmt.Sprintf("  exit %d", code)
		}
		if d.ErrorCode != "" {
			extra += "  " + d.ErrorCode
		}
	}
	fmt.Fprintf(w, "%s  %-4s %-12s %-10s %-38s %s -> %s%s\n", ev.Time.Local().Format("15:04:05.000"),
		d.Source, d.RegionID, d.Level, who, from, d.Status, extra)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// demoHints turns the hints on, or not, and sets the interval the demo
// polls at: with hints, the emulator pushes each run's end to capoller's
// endpoint (a fresh token each run), and a slow poll still shows outcomes
// within a second.
func demoHints(cfg *config, sim *castest.Server, on bool) error {
	if !on {
		if cfg.Interval == 0 {
			cfg.Interval = time.Second
		}
		return nil
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Minute
	}
	addr, err := harness.FreeAddr()
	if err != nil {
		return fmt.Errorf("hints: %w", err)
	}
	cfg.Hints = hintsConfig{Listen: addr, Token: randomHex(16)}
	return sim.SetEventBridge(castest.EventBridge{URL: "http://" + addr + hintintake.Path, Token: cfg.Hints.Token})
}

// printDemoHeader says what the demo runs, and how to follow it.
func printDemoHeader(stdout io.Writer, o demoOptions, cfg config, simURL, natsURL string, resumed bool) {
	fmt.Fprintf(stdout, "capoller demo\n")
	fmt.Fprintf(stdout, "  emulator   %s (%d ECS instances, a command every %v)\n", simURL, o.instances, o.every)
	fmt.Fprintf(stdout, "  NATS       %s  stream %s, subjects %s.>\n", natsURL, cfg.Stream, cfg.SubjectPrefix)
	fmt.Fprintf(stdout, "  data       %s (resumed: %v)\n", o.dataDir, resumed)
	if cfg.Hints.Listen != "" {
		fmt.Fprintf(stdout, "  hints      the emulator pushes TaskCompleted to http://%s%s; polls every %v\n", cfg.Hints.Listen, hintintake.Path, cfg.Interval)
	}
	fmt.Fprintf(stdout, "  watch      go run ./cmd/capoller watch --nats-url %s --since 1h\n\n", natsURL) // capoller's own: no other tool needed
}
