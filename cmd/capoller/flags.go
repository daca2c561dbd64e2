package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"
)

// settingGroup is the part of the configuration a setting belongs to. A
// subcommand declares the groups it uses, and no other setting: its help
// lists them under these titles, in this order, after its own flags.
type settingGroup int

const (
	groupAPI settingGroup = iota
	groupOutput
	groupNATS
	groupStream
	groupCheckpoint
	groupReplicas
	groupHints
	groupOps
)

// allGroups are run's: every setting.
func allGroups() []settingGroup {
	return []settingGroup{groupAPI, groupOutput, groupNATS, groupStream, groupCheckpoint, groupReplicas, groupHints, groupOps}
}

func (g settingGroup) title() string {
	return [...]string{"Cloud Assistant API", "output on events", "NATS", "the stream", "checkpoint store", "replica group", "hints (EventBridge)", "operations"}[g]
}

// groupOf is the group of the setting named name.
func groupOf(name string) settingGroup {
	switch {
	case strings.HasPrefix(name, "output"):
		return groupOutput
	case strings.HasPrefix(name, "hints-"):
		return groupHints
	case name == "nats-url" || strings.HasPrefix(name, "nats-"):
		return groupNATS
	case name == "stream" || name == "subject-prefix" || name == "duplicate-window" || strings.HasPrefix(name, "stream-"):
		return groupStream
	case name == "checkpoint" || name == "bucket" || name == "key-prefix" || strings.HasPrefix(name, "redis-") || strings.HasPrefix(name, "history-"):
		return groupCheckpoint
	case name == "replica-id" || name == "lease-ttl":
		return groupReplicas
	case strings.HasSuffix(name, "-addr") || strings.HasPrefix(name, "log-") || name == "data-dir":
		return groupOps
	}
	return groupAPI
}

// typeOf names the type of a setting's value for help: duration, list,
// int, number, bool, url, path, address, regexp or string. It is read
// from the configuration's field of the same YAML name, then from the
// name's form.
func typeOf(name string) string {
	switch {
	case name == "output-redact":
		return "regexp"
	case name == "endpoint" || strings.HasSuffix(name, "-url"):
		return "url"
	case strings.HasSuffix(name, "-addr") || name == "hints-listen":
		return "address"
	case strings.HasSuffix(name, "-file") || strings.HasSuffix(name, "-dir") || name == "config" ||
		slices.Contains([]string{"nats-creds", "nats-nkey-seed", "nats-ca", "nats-cert", "nats-key", "redis-ca", "redis-cert", "redis-key", "hints-tls-cert", "hints-tls-key"}, name):
		return "path"
	}
	t := reflect.TypeFor[config]()
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag != name {
			continue
		}
		switch ft := t.Field(i).Type; {
		case ft == reflect.TypeFor[time.Duration]():
			return "duration"
		case ft.Kind() == reflect.Slice:
			return "list"
		case ft.Kind() == reflect.Bool:
			return "bool"
		case ft.Kind() == reflect.Float64:
			return "number"
		case ft.Kind() >= reflect.Int && ft.Kind() <= reflect.Int64:
			return "int"
		}
	}
	return "string"
}

// newFlags is the flag set of a subcommand ("watch", "config check"). Its
// help and its errors are parseArgs's to print, not the flag package's.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("capoller "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseArgs parses a subcommand's arguments. -h or --help prints its help
// to stdout (code 0); a usage error prints, to stderr, the error, a
// suggestion for a flag one or two letters off, and one line of usage
// (code 2). ok is true when the command goes on.
func parseArgs(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		printHelp(stdout, fs)
		return 0, false
	}
	fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
	if name, found := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); found {
		if near := nearestFlag(fs, name); near != "" {
			fmt.Fprintf(stderr, "did you mean --%s?\n", near)
		}
	}
	fmt.Fprintf(stderr, "usage: %s [flags]; %s --help lists them\n", fs.Name(), fs.Name())
	return 2, false
}

// renamed is the name a setting took since, for a name it had: the
// suggestion for the old name, before any name near it.
func renamed(old string) string {
	switch old {
	case "nats-nkey": // one letter from nats-key, the TLS client key
		return "nats-nkey-seed"
	}
	return ""
}

// nearestFlag is the flag of fs closest to name, if it is one or two
// edits away ("region" for "regions"), or the name a renamed setting
// took; else "".
func nearestFlag(fs *flag.FlagSet, name string) string {
	if n := renamed(name); n != "" && fs.Lookup(n) != nil {
		return n
	}
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return nearest(names, name)
}

// nearest is the name of names closest to s, within two edits, or "".
func nearest(names []string, s string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(n, s); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// filterFlags are the flags of watch and replay that choose events; their
// help lists them first, under "filters".
func isFilterFlag(name string) bool {
	return slices.Contains([]string{"account", "source", "region", "invocation", "instance", "command", "level", "status"}, name)
}

// printHelp prints a subcommand's help: its usage line and summary, its
// own flags, its filters, then the settings it shares with run, by group,
// each with its type, default and environment variable.
func printHelp(w io.Writer, fs *flag.FlagSet) {
	cmd := strings.TrimPrefix(fs.Name(), "capoller ")
	fmt.Fprintf(w, "usage: %s [flags]\n", fs.Name())
	if s := summaryOf(cmd); s != "" {
		fmt.Fprintf(w, "\n%s\n", s)
	}
	shared := map[string]bool{}
	for _, s := range settings() {
		shared[s.name] = true
	}
	sections := map[string][]*flag.Flag{}
	var order []string
	fs.VisitAll(func(f *flag.Flag) {
		title := cmd
		switch {
		case isFilterFlag(f.Name):
			title = "filters"
		case f.Name == "config":
			title = "configuration"
		case shared[f.Name]:
			title = groupOf(f.Name).title()
		}
		if sections[title] == nil {
			order = append(order, title)
		}
		sections[title] = append(sections[title], f)
	})
	rank := func(title string) int {
		switch title {
		case cmd:
			return -3
		case "filters":
			return -2
		case "configuration":
			return -1
		}
		for _, g := range allGroups() {
			if g.title() == title {
				return int(g)
			}
		}
		return 100
	}
	slices.SortStableFunc(order, func(a, b string) int { return rank(a) - rank(b) })
	for _, title := range order {
		fmt.Fprintf(w, "\n%s:\n", title)
		for _, f := range sections[title] {
			printFlag(w, f, shared[f.Name])
		}
	}
}

// printFlag prints one flag as the flag package does ("  -name type",
// then its usage), with its real type.
func printFlag(w io.Writer, f *flag.Flag, shared bool) {
	typ, usage := flag.UnquoteUsage(f)
	if shared {
		typ = typeOf(f.Name)
	}
	switch {
	case (typ == "value" || typ == "string") && strings.HasPrefix(usage, "comma-separated"):
		typ = "list"
	case typ == "value":
		typ = "string"
	case typ == "bool" || typ == "" && isBoolFlag(f):
		typ = ""
	}
	line := "  -" + f.Name
	if typ != "" {
		line += " " + typ
	}
	if d := f.DefValue; d != "" && d != "0" && d != "false" && d != "0s" && !strings.Contains(usage, "(default ") {
		usage += fmt.Sprintf(" (default %s)", d)
	}
	fmt.Fprintf(w, "%s\n    \t%s\n", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
}

// isBoolFlag reports a flag given alone (--yes).
func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// summaryOf is the line the command list gives a subcommand.
func summaryOf(cmd string) string {
	first, _, _ := strings.Cut(cmd, " ")
	for _, line := range strings.Split(usage, "\n") {
		if rest, ok := strings.CutPrefix(line, "  "+first+" "); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}

// unknownEnv lists the CAPOLLER_* variables of environ that no setting
// reads, each with the setting's variable it is nearest to, if any.
func unknownEnv(environ []string) []string {
	known := []string{"CAPOLLER_CONFIG"}
	for _, s := range settings() {
		known = append(known, envName(s.name))
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "CAPOLLER_") || slices.Contains(known, name) || testOnlyEnv(name) {
			continue
		}
		msg := fmt.Sprintf("%s is not a setting of capoller, and is ignored", name)
		old := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "CAPOLLER_"), "_", "-"))
		if n := renamed(old); n != "" {
			msg += fmt.Sprintf("; it was renamed %s", envName(n))
		} else if near := nearest(known, name); near != "" {
			msg += fmt.Sprintf("; did you mean %s?", near)
		}
		out = append(out, msg)
	}
	slices.Sort(out)
	return out
}

// testOnlyEnv names the variables the test suite and the chaos harness
// read; they are not settings.
func testOnlyEnv(name string) bool {
	return strings.HasPrefix(name, "CAPOLLER_TEST_") || name == "CAPOLLER_CHAOS_SEED" || name == "CAPOLLER_MIX_SEEDS" || name == "CAPOLLER_UPDATE_GOLDEN"
}

// warnUnknownEnv prints unknownEnv's warnings to w, one per line.
func warnUnknownEnv(w io.Writer) {
	for _, msg := range unknownEnv(os.Environ()) {
		fmt.Fprintf(w, "capoller: warning: %s\n", msg)
	}
}

// loadSettings declares the settings of groups on fs, parses args (its
// help and usage errors printed as parseArgs prints them), and loads the
// configuration, printing an error in it and each unknown CAPOLLER_*
// variable. When ok is false, the command exits with code.
func loadSettings(fs *flag.FlagSet, args []string, stdout, stderr io.Writer, groups ...settingGroup) (cfg config, code int, ok bool) {
	cf := bindConfig(fs, os.Getenv, groups...)
	if code, ok := parseArgs(fs, args, stdout, stderr); !ok {
		return config{}, code, false
	}
	warnUnknownEnv(stderr)
	cfg, err := cf.load()
	if err != nil {
		fmt.Fprintf(stderr, "%s: configuration: %v\n", fs.Name(), err)
		return cfg, 2, false
	}
	return cfg, 0, true
}
