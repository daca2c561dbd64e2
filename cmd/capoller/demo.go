package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/publisher"
)

type demoOptions struct {
	duration  time.Duration
	dataDir   string
	print     string
	interval  time.Duration
	every     time.Duration
	instances int
	natsPort  int
}

func demoCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("capoller demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o demoOptions
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: run until interrupted)")
	fs.StringVar(&o.dataDir, "data-dir", filepath.Join(os.TempDir(), "capoller-demo"), "where the demo keeps NATS data, checkpoints and the emulator's state; run again with the same directory to resume")
	fs.StringVar(&o.print, "print", "pretty", "how to print events: pretty, json or none")
	fs.DurationVar(&o.interval, "interval", time.Second, "poll interval")
	fs.DurationVar(&o.every, "every", 1500*time.Millisecond, "how often the simulated operators run a command")
	fs.IntVar(&o.instances, "instances", 3, "simulated ECS instances")
	fs.IntVar(&o.natsPort, "nats-port", 0, "port of the embedded NATS server (0: any free port)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
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
	resumed := false
	if f, err := os.Open(statePath); err == nil {
		err = sim.LoadState(f)
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("resume the emulator from %s: %w", statePath, err)
		}
		resumed = true
	}
	simURL, err := sim.Start("127.0.0.1:0")
	if err != nil {
		return err
	}

	// NATS with JetStream, in process.
	srv, err := publisher.RunEmbedded(publisher.EmbeddedOptions{StoreDir: filepath.Join(o.dataDir, "nats"), Port: o.natsPort})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	cfg := defaultConfig()
	cfg.Endpoint, cfg.NATSURL, cfg.Checkpoint, cfg.Interval = simURL, srv.URL(), "natskv", o.interval
	cfg.DataDir, cfg.accessKeyID, cfg.accessKeySecret = o.dataDir, keyID, secret

	fmt.Fprintf(stdout, "capoller demo\n")
	fmt.Fprintf(stdout, "  emulator   %s (%d ECS instances, a command every %v)\n", simURL, o.instances, o.every)
	fmt.Fprintf(stdout, "  NATS       %s  stream %s, subjects %s.>\n", srv.URL(), cfg.Stream, cfg.SubjectPrefix)
	fmt.Fprintf(stdout, "  data       %s (resumed: %v)\n", o.dataDir, resumed)
	fmt.Fprintf(stdout, "  subscribe  nats --server %s sub '%s.>'\n\n", srv.URL(), cfg.SubjectPrefix)

	// A subscriber, printing events as they arrive.
	nc, err := nats.Connect(srv.URL(), nats.Name("capoller-demo-printer"))
	if err != nil {
		return fmt.Errorf("connect the printer: %w", err)
	}
	var mu sync.Mutex
	count := 0
	if _, err := nc.Subscribe(cfg.SubjectPrefix+".>", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		count++
		printEvent(stdout, o.print, m)
	}); err != nil {
		nc.Close()
		return fmt.Errorf("subscribe: %w", err)
	}

	log, err := newLogger("console", "warn", stderr)
	if err != nil {
		nc.Close()
		return err
	}
	workCtx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); sim.RunWorkload(workCtx, castest.WorkloadOptions{Every: o.every}) }()
	runErr := daemon(ctx, cfg, log, nil)
	stopWork()
	wg.Wait()

	_ = nc.Drain() // deliver what was published before we stop
	for !nc.IsClosed() {
		time.Sleep(10 * time.Millisecond)
	}
	if err := saveState(sim, statePath); err != nil {
		return err
	}
	mu.Lock()
	fmt.Fprintf(stdout, "\n%d events this run. State kept in %s: run again with --data-dir %s to resume.\n", count, o.dataDir, o.dataDir)
	mu.Unlock()
	if runErr != nil && !errors.Is(runErr, context.Canceled) && !errors.Is(runErr, context.DeadlineExceeded) {
		return runErr
	}
	return nil
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

func printEvent(w io.Writer, mode string, m *nats.Msg) {
	switch mode {
	case "none":
		return
	case "json":
		fmt.Fprintf(w, "%s\n", m.Data)
		return
	}
	var ev publisher.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		fmt.Fprintf(w, "undecodable event on %s: %v\n", m.Subject, err)
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
		if d.Terminal && d.ExitCode != nil {
			extra = fmt.Sprintf("  exit %d", *d.ExitCode)
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
