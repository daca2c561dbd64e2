package main

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
)

// setupRun runs `capoller setup` with args and returns its exit code and
// outputs.
func setupRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errs bytes.Buffer
	code = cli(t.Context(), append([]string{"setup"}, args...), &out, &errs)
	return code, out.String(), errs.String()
}

// setupFixture is a real NATS server with JetStream, a unique stream and
// subject prefix (the stream is deleted when the test ends), and the
// flags naming them.
func setupFixture(t *testing.T, base string) (js jetstream.JetStream, stream, prefix string, flags []string) {
	t.Helper()
	stream = testenv.Name(base)
	prefix = strings.ToLower(stream)
	url := testenv.NATSURL(t)
	_, js = testenv.NATS(t, url, stream)
	return js, stream, prefix, []string{"--nats-url", url, "--stream", stream, "--subject-prefix", prefix}
}

func setupStreamConfig(t *testing.T, js jetstream.JetStream, stream string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config
}

// hasLine reports whether out has a line matching the pattern, its
// spaces any run of blanks: "max_age 1h0m0s → 24h0m0s".
func hasLine(out, pattern string) bool {
	re := regexp.MustCompile(`(?m)^\s*` + strings.ReplaceAll(regexp.QuoteMeta(pattern), " ", `\s+`) + `\s*$`)
	return re.MatchString(out)
}

// setup creates a missing stream as the daemon would, printing what it is
// created with; a second run changes nothing and says so, and the daemon
// then finds the stream exactly as it would have created it.
func TestSetupCreatesThenHasNoChanges(t *testing.T) {
	js, stream, prefix, flags := setupFixture(t, "CAPOLLER_SETUP_NEW")
	flags = append(flags, "--stream-max-age", "168h", "--stream-max-bytes", "1000000000")
	code, out, errs := setupRun(t, flags...)
	if code != 0 {
		t.Fatalf("first run: exit %d\n%s%s", code, out, errs)
	}
	for _, line := range []string{"subjects " + prefix + ".>", "retention limits", "storage file", "discard old", "max_age 168h0m0s",
		"max_bytes 1000000000", "duplicate_window 10m0s", "replicas 1", "stream " + stream + " created"} {
		if !hasLine(out, line) {
			t.Errorf("first run does not print %q:\n%s", line, out)
		}
	}
	cfg := setupStreamConfig(t, js, stream)
	if !slices.Equal(cfg.Subjects, []string{prefix + ".>"}) || cfg.MaxAge != 168*time.Hour || cfg.MaxBytes != 1e9 || cfg.Duplicates != 10*time.Minute ||
		cfg.Storage != jetstream.FileStorage || cfg.Retention != jetstream.LimitsPolicy || cfg.Replicas != 1 {
		t.Errorf("created %+v", cfg)
	}

	code, out, errs = setupRun(t, flags...)
	if code != 0 || strings.TrimSpace(out) != "stream "+stream+": no changes" {
		t.Errorf("second run: exit %d, %q %q; want 0 and no changes", code, out, errs)
	}
	if got := setupStreamConfig(t, js, stream); !slices.Equal(got.Subjects, cfg.Subjects) || got.MaxAge != cfg.MaxAge || got.MaxBytes != cfg.MaxBytes {
		t.Errorf("second run changed the stream: %+v", got)
	}

	// The daemon, with the same configuration, has nothing to say.
	pub, err := publisher.New(js, publisher.Options{Stream: stream, SubjectPrefix: prefix, MaxAge: 168 * time.Hour, MaxBytes: 1e9})
	if err != nil {
		t.Fatal(err)
	}
	if change, err := pub.SetupStream(t.Context()); err != nil || change.Created || change.Raised || len(change.Kept) != 0 {
		t.Errorf("the daemon after setup: %+v, %v; want the stream it would have created", change, err)
	}
}

// Safe changes (raising max age and the duplicate window, adding our
// subject to a stream that does not capture it) are applied without
// --yes, after the diff; the operator's subject stays.
func TestSetupAppliesSafeChanges(t *testing.T) {
	js, stream, prefix, flags := setupFixture(t, "CAPOLLER_SETUP_SAFE")
	theirs := "x_" + prefix + ".>"
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: stream, Subjects: []string{theirs}, MaxAge: time.Hour, MaxMsgs: 500, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	flags = append(flags, "--stream-max-age", "24h")
	code, out, errs := setupRun(t, flags...)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	for _, line := range []string{"stream " + stream + ": 3 changes:", "subjects " + theirs + " → " + theirs + ", " + prefix + ".>",
		"max_age 1h0m0s → 24h0m0s", "duplicate_window 2m0s → 10m0s", "stream " + stream + " updated"} {
		if !hasLine(out, line) {
			t.Errorf("does not print %q:\n%s", line, out)
		}
	}
	if strings.Contains(out, " \n") {
		t.Errorf("trailing blanks in %q", out)
	}
	cfg := setupStreamConfig(t, js, stream)
	if !slices.Equal(cfg.Subjects, []string{theirs, prefix + ".>"}) || cfg.MaxAge != 24*time.Hour || cfg.Duplicates != 10*time.Minute || cfg.MaxMsgs != 500 {
		t.Errorf("after setup: %+v; want our subject added to theirs, max age 24h, window 10m, their max msgs kept", cfg)
	}
	if code, out, _ := setupRun(t, flags...); code != 0 || !strings.Contains(out, "no changes") {
		t.Errorf("second run: exit %d, %q; want no changes", code, out)
	}
}

// A destructive change (lowering max age, setting max bytes under what the
// stream keeps) changes nothing without --yes: the diff says what is at
// stake, and the exit code is 3. --dry-run --yes reports what --yes would
// do and does nothing; --yes applies it, keeping the operator's subjects.
func TestSetupDestructiveNeedsYes(t *testing.T) {
	js, stream, prefix, flags := setupFixture(t, "CAPOLLER_SETUP_DESTROY")
	subjects := []string{prefix + ".>", "y_" + prefix + ".*"}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: stream, Subjects: subjects, MaxAge: 48 * time.Hour, Duplicates: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	flags = append(flags, "--stream-max-age", "24h", "--stream-max-bytes", "1000000")
	code, out, errs := setupRun(t, flags...)
	if code != exitNeedsYes {
		t.Fatalf("without --yes: exit %d, want %d\n%s%s", code, exitNeedsYes, out, errs)
	}
	for _, line := range []string{
		"max_age 48h0m0s → 24h0m0s destructive: deletes the stored messages older than 24h0m0s",
		"max_bytes unlimited → 1000000 destructive: deletes the oldest stored messages beyond 1000000",
	} {
		if !hasLine(out, line) {
			t.Errorf("does not print %q:\n%s", line, out)
		}
	}
	if !strings.Contains(errs, "2 destructive changes (max_age, max_bytes); nothing changed: run again with --yes") {
		t.Errorf("stderr %q does not say what needs --yes", errs)
	}
	unchanged := func(when string) {
		t.Helper()
		if cfg := setupStreamConfig(t, js, stream); cfg.MaxAge != 48*time.Hour || cfg.MaxBytes != -1 {
			t.Errorf("%s: the stream changed: max age %v, max bytes %d", when, cfg.MaxAge, cfg.MaxBytes)
		}
	}
	unchanged("without --yes")

	code, out, errs = setupRun(t, append(flags, "--dry-run", "--yes")...)
	if code != 0 || !strings.Contains(out, "dry run, nothing changed") || !hasLine(out, "max_age 48h0m0s → 24h0m0s destructive: deletes the stored messages older than 24h0m0s") {
		t.Errorf("--dry-run --yes: exit %d\n%s%s", code, out, errs)
	}
	unchanged("--dry-run")

	if code, out, errs = setupRun(t, append(flags, "--yes")...); code != 0 || !strings.Contains(out, "stream "+stream+" updated") {
		t.Fatalf("--yes: exit %d\n%s%s", code, out, errs)
	}
	cfg := setupStreamConfig(t, js, stream)
	if cfg.MaxAge != 24*time.Hour || cfg.MaxBytes != 1e6 || !slices.Equal(cfg.Subjects, subjects) {
		t.Errorf("after --yes: %+v; want max age 24h, max bytes 1000000, the subjects kept", cfg)
	}
	if code, out, _ := setupRun(t, flags...); code != 0 || !strings.Contains(out, "no changes") {
		t.Errorf("after --yes, a run without it: exit %d, %q; want no changes", code, out)
	}
}

// A limit the operator set on the stream, which the configuration does not
// carry (stream-max-age and stream-max-bytes left at 0), is not removed
// without --yes: a stream without limits grows until the disk is full.
func TestSetupKeepsOperatorLimitsWithoutYes(t *testing.T) {
	js, stream, prefix, flags := setupFixture(t, "CAPOLLER_SETUP_KEEP")
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".>"}, MaxAge: 7 * 24 * time.Hour,
		MaxBytes: 5e9, Duplicates: 10 * time.Minute, Discard: jetstream.DiscardOld, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	code, out, errs := setupRun(t, flags...)
	if code != exitNeedsYes || !hasLine(out, "max_age 168h0m0s → unlimited destructive: removes the stream's age limit: it then keeps every event until its bytes limit, or the server's storage, is full (set stream-max-age to keep a limit)") ||
		!hasLine(out, "max_bytes 5000000000 → unlimited destructive: removes the stream's bytes limit: it then grows until its age limit, or the server's storage, stops it (set stream-max-bytes to keep a limit)") {
		t.Errorf("limits the configuration lacks: exit %d, want %d\n%s%s", code, exitNeedsYes, out, errs)
	}
	if cfg := setupStreamConfig(t, js, stream); cfg.MaxAge != 7*24*time.Hour || cfg.MaxBytes != 5e9 {
		t.Errorf("the operator's limits changed: %+v", cfg)
	}
	// The same limits in the configuration: nothing to do.
	if code, out, errs := setupRun(t, append(flags, "--stream-max-age", "168h", "--stream-max-bytes", "5000000000")...); code != 0 || !strings.Contains(out, "no changes") {
		t.Errorf("the limits configured: exit %d\n%s%s", code, out, errs)
	}
}

// Changes JetStream cannot make (storage; retention before server 2.10)
// change nothing, with exit code 4 and what to do instead, even with
// --yes.
func TestSetupImpossibleChanges(t *testing.T) {
	js, stream, prefix, flags := setupFixture(t, "CAPOLLER_SETUP_NO")
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".>"}, Storage: jetstream.MemoryStorage, MaxAge: time.Hour, Duplicates: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	code, out, errs := setupRun(t, append(flags, "--yes")...)
	if code != exitImpossible || !hasLine(out, "storage memory → file impossible: JetStream does not change a stream's storage: use another --stream, or delete this one (and its messages) and run setup again") ||
		!hasLine(out, "max_age 1h0m0s → unlimited destructive: removes the stream's age limit: it then keeps every event until its bytes limit, or the server's storage, is full (set stream-max-age to keep a limit)") ||
		!strings.Contains(errs, "nothing changed") {
		t.Errorf("memory storage: exit %d, want %d\n%s%s", code, exitImpossible, out, errs)
	}
	if cfg := setupStreamConfig(t, js, stream); cfg.Storage != jetstream.MemoryStorage || cfg.MaxAge != time.Hour {
		t.Errorf("the stream changed: %+v", cfg)
	}
	if err := js.DeleteStream(t.Context(), stream); err != nil {
		t.Fatal(err)
	}

	// Interest retention: a server before 2.10 cannot change it, a later
	// one can, with --yes.
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".>"}, Retention: jetstream.InterestPolicy, Duplicates: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	code, out, errs = setupRun(t, flags...)
	version := js.Conn().ConnectedServerVersion()
	if old := strings.HasPrefix(version, "2.9.") || strings.HasPrefix(version, "2.8."); old {
		if code != exitImpossible || !hasLine(out, "retention interest → limits impossible: NATS server "+version+" does not change a stream's retention (2.10 and later do): use another --stream, or delete this one (and its messages) and run setup again") {
			t.Errorf("interest retention on %s: exit %d\n%s%s", version, code, out, errs)
		}
		return
	}
	if code != exitNeedsYes || !hasLine(out, "retention interest → limits destructive: every consumer of the stream, not only capoller's, sees messages kept or removed under another policy") {
		t.Errorf("interest retention on %s: exit %d\n%s%s", version, code, out, errs)
	}
	if code, out, errs := setupRun(t, append(flags, "--yes")...); code != 0 || setupStreamConfig(t, js, stream).Retention != jetstream.LimitsPolicy {
		t.Errorf("interest retention on %s with --yes: exit %d\n%s%s", version, code, out, errs)
	}
}

// Lowering the replicas of a clustered stream needs --yes; raising them
// back does not.
func TestSetupReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster")
	}
	cluster := testenv.NATSCluster(t, 3)
	stream := testenv.Name("CAPOLLER_SETUP_R")
	prefix := strings.ToLower(stream)
	_, js := testenv.NATS(t, cluster.URL(), stream)
	flags := []string{"--nats-url", cluster.URL(), "--stream", stream, "--subject-prefix", prefix}
	if code, out, errs := setupRun(t, append(flags, "--stream-replicas", "3")...); code != 0 || !hasLine(out, "replicas 3") {
		t.Fatalf("create R3: exit %d\n%s%s", code, out, errs)
	}
	r1 := append(flags, "--stream-replicas", "1")
	code, out, errs := setupRun(t, r1...)
	if code != exitNeedsYes || !hasLine(out, "replicas 3 → 1 destructive: fewer copies of every message: losing 1 server(s) then loses the stream") {
		t.Errorf("lower to R1: exit %d\n%s%s", code, out, errs)
	}
	if got := setupStreamConfig(t, js, stream).Replicas; got != 3 {
		t.Errorf("replicas %d without --yes", got)
	}
	if code, out, errs := setupRun(t, append(r1, "--yes")...); code != 0 || setupStreamConfig(t, js, stream).Replicas != 1 {
		t.Errorf("lower to R1 with --yes: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := setupRun(t, append(flags, "--stream-replicas", "3")...); code != 0 || !hasLine(out, "replicas 1 → 3") || setupStreamConfig(t, js, stream).Replicas != 3 {
		t.Errorf("raise to R3: exit %d\n%s%s", code, out, errs)
	}
}

// setup needs a NATS server, and its errors name no secret.
func TestSetupRefusals(t *testing.T) {
	if code, _, errs := setupRun(t, "--nats-url", "embedded"); code != 2 || !strings.Contains(errs, "embedded") {
		t.Errorf("embedded: exit %d, %q", code, errs)
	}
	if code, _, errs := setupRun(t, "--nats-url", "nats://capoller:hunter2@127.0.0.1:1"); code != 1 || strings.Contains(errs, "hunter2") || !strings.Contains(errs, "REDACTED") {
		t.Errorf("unreachable NATS: exit %d, %q; want 1 and the URL redacted", code, errs)
	}
	if code, _, errs := setupRun(t, "--stream-max-age", "1m"); code != 2 || !strings.Contains(errs, "stream-max-age") {
		t.Errorf("max age under the duplicate window: exit %d, %q", code, errs)
	}
}
