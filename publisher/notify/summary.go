package notify

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/capoller/capoller/publisher/events"
)

// MaxErrors is how many instances' errors a message quotes.
const MaxErrors = 3

// maxErrorText bounds one quoted error, in bytes.
const maxErrorText = 160

// Summary is what one message says about one invocation: its command,
// outcome, failing instances by status, the first errors, how long it
// ran, and the events it covers.
type Summary struct {
	Account     string `json:"account"`
	Source      string `json:"source"`
	Region      string `json:"regionId"`
	InvokeID    string `json:"invokeId"`
	CommandID   string `json:"commandId"`
	CommandName string `json:"commandName"`
	// Status is the invocation's final status; empty when its final
	// aggregate event did not arrive within the grouping window.
	Status events.Status `json:"status,omitempty"`
	// Failed counts the failing instances grouped; ByStatus splits them.
	Failed   int             `json:"failedInstances"`
	ByStatus []StatusCount   `json:"byStatus,omitempty"`
	Errors   []InstanceError `json:"errors,omitempty"`
	// Outputs are the ends of what the failing instances printed, those
	// of the same end once (see [MaxOutputs]); OtherOutputs and
	// OtherOutputInstances count the outputs not shown and their
	// instances. A digest's summaries carry none: it shows a few
	// ([DigestOutput]) for them all.
	Outputs              []Output `json:"outputs,omitempty"`
	OtherOutputs         int      `json:"otherOutputs,omitempty"`
	OtherOutputInstances int      `json:"otherOutputInstances,omitempty"`
	// Started and Finished span the run: the earliest start and latest
	// finish the API gave, else the times capoller observed.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// FollowUp: an earlier message already covered this invocation
	// (these instance events came after it was sent).
	FollowUp bool     `json:"followUp,omitempty"`
	Rules    []string `json:"rules"`
	EventIDs []string `json:"eventIds"`
}

// StatusCount is how many instances ended in one status.
type StatusCount struct {
	Status events.Status `json:"status"`
	Count  int           `json:"count"`
}

// InstanceError is one failing instance's error, trimmed.
type InstanceError struct {
	InstanceID string        `json:"instanceId"`
	Status     events.Status `json:"status"`
	ExitCode   *int64        `json:"exitCode,omitempty"`
	ErrorCode  string        `json:"errorCode,omitempty"`
	ErrorInfo  string        `json:"errorInfo,omitempty"`
}

// Duration is how long the invocation ran, as far as it is known.
func (s Summary) Duration() time.Duration {
	if s.Started.IsZero() || s.Finished.Before(s.Started) {
		return 0
	}
	return s.Finished.Sub(s.Started)
}

// summarize builds the summary of one group's events: the aggregate (nil
// if it never came) and the failing instances' latest events.
func summarize(agg *events.Event, instances []events.Event, followUp bool, rules []string, ids []string) Summary {
	var first events.Data
	if agg != nil {
		first = agg.Data
	} else if len(instances) > 0 {
		first = instances[0].Data
	}
	s := Summary{Account: first.Account, Source: first.Source, Region: first.RegionID, InvokeID: first.InvokeID,
		CommandID: first.CommandID, CommandName: first.CommandName, Failed: len(instances), FollowUp: followUp,
		Rules: rules, EventIDs: ids}
	if agg != nil {
		s.Status = agg.Data.Status
	}
	counts := map[events.Status]int{}
	var start, finish, seenFrom, seenTo time.Time
	earliest := func(t *time.Time, v time.Time) {
		if !v.IsZero() && (t.IsZero() || v.Before(*t)) {
			*t = v
		}
	}
	latest := func(t *time.Time, v time.Time) {
		if v.After(*t) {
			*t = v
		}
	}
	observe := func(d events.Data) {
		earliest(&seenFrom, d.PreviousObserved())
		earliest(&seenFrom, d.Observed())
		latest(&seenTo, d.Observed())
	}
	if agg != nil {
		observe(agg.Data)
	}
	sorted := slices.Clone(instances)
	slices.SortFunc(sorted, func(a, b events.Event) int { return cmp.Compare(a.Data.InstanceID, b.Data.InstanceID) })
	for _, e := range sorted {
		d := e.Data
		counts[d.Status]++
		earliest(&start, d.Started())
		latest(&finish, d.Finished())
		observe(d)
		if len(s.Errors) < MaxErrors {
			ie := InstanceError{InstanceID: d.InstanceID, Status: d.Status, ErrorCode: trimText(d.ErrorCode), ErrorInfo: trimText(d.ErrorInfo)}
			if code, ok := d.ExitCodeOf(); ok { // not the API's 0 beside a Timeout
				ie.ExitCode = &code
			}
			s.Errors = append(s.Errors, ie)
		}
		if s.CommandName == "" {
			s.CommandName, s.CommandID = d.CommandName, d.CommandID
		}
	}
	s.Outputs, s.OtherOutputs, s.OtherOutputInstances = outputsOf(sorted)
	for st, n := range counts {
		s.ByStatus = append(s.ByStatus, StatusCount{Status: st, Count: n})
	}
	slices.SortFunc(s.ByStatus, func(a, b StatusCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Status, b.Status))
	})
	s.Started, s.Finished = start, finish
	if start.IsZero() {
		s.Started = seenFrom
	}
	if finish.IsZero() || finish.Before(s.Started) {
		s.Finished = seenTo
	}
	return s
}

// trimText keeps the first line of s, at most maxErrorText bytes of it
// (never splitting a character), marked with "…" when cut.
func trimText(s string) string {
	s = strings.TrimSpace(s)
	line, _, more := strings.Cut(s, "\n")
	line = strings.TrimSpace(line)
	if len(line) > maxErrorText {
		cut := maxErrorText
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut--
		}
		line, more = line[:cut], true
	}
	if more {
		line += "…"
	}
	return line
}

// A doc is a message before its dialect: a title, a heading, lines, list
// items, outputs, and lines after them.
type doc struct {
	title   string
	heading string
	lines   []string
	items   []string
	outputs []outputBlock
	// outputsTail counts the outputs not shown ("" if none).
	outputsTail string
	tail        []string
}

func (s Summary) command() string {
	name := s.CommandName
	if name == "" {
		name = s.CommandID
	}
	if name == "" {
		name = "(unnamed command)"
	}
	return name
}

func (s Summary) outcome() string {
	if s.Status != "" {
		return string(s.Status)
	}
	return "failing"
}

func (s Summary) doc() doc {
	d := doc{title: fmt.Sprintf("capoller: %s %s", s.command(), s.outcome())}
	d.heading = fmt.Sprintf("%s %s", s.command(), s.outcome())
	if s.CommandID != "" && s.CommandID != s.command() {
		d.heading = fmt.Sprintf("%s (%s) %s", s.command(), s.CommandID, s.outcome())
	}
	if s.FollowUp {
		d.heading += " (more failures after the first message)"
	}
	if s.Failed > 0 {
		parts := make([]string, 0, len(s.ByStatus))
		for _, c := range s.ByStatus {
			parts = append(parts, fmt.Sprintf("%d %s", c.Count, c.Status))
		}
		noun := "instances"
		if s.Failed == 1 {
			noun = "instance"
		}
		d.lines = append(d.lines, fmt.Sprintf("%d %s failed: %s", s.Failed, noun, strings.Join(parts, ", ")))
	}
	if s.Status == "" {
		d.lines = append(d.lines, "no final status for the invocation yet")
	}
	d.lines = append(d.lines, fmt.Sprintf("account %s · %s %s · invocation %s", s.Account, s.Source, s.Region, s.InvokeID))
	if !s.Started.IsZero() {
		d.lines = append(d.lines, fmt.Sprintf("ran %v, %s → %s", s.Duration().Round(time.Second),
			s.Started.UTC().Format(time.RFC3339), s.Finished.UTC().Format(time.RFC3339)))
	}
	for _, e := range s.Errors {
		item := e.InstanceID + " " + string(e.Status)
		if e.ExitCode != nil {
			item += fmt.Sprintf(" exit %d", *e.ExitCode)
		}
		if e.ErrorCode != "" {
			item += ": " + e.ErrorCode
		}
		if e.ErrorInfo != "" {
			item += ": " + e.ErrorInfo
		}
		d.items = append(d.items, item)
	}
	if more := s.Failed - len(s.Errors); more > 0 && len(s.Errors) > 0 {
		d.items = append(d.items, fmt.Sprintf("… and %d more", more))
	}
	for _, o := range s.Outputs {
		d.outputs = append(d.outputs, o.block())
	}
	if s.OtherOutputs > 0 {
		d.outputsTail = fmt.Sprintf("… and %s of %s not shown", plural(s.OtherOutputs, "other output"), plural(s.OtherOutputInstances, "instance"))
	}
	return d
}

// digestDoc lists many summaries in one message: the first max one by
// one, the rest counted by command and status (at most max lines of
// counts, then one line for what remains), so nothing goes unmentioned
// and the text stays bounded.
func digestDoc(sums []Summary, max int) doc {
	d := doc{title: fmt.Sprintf("capoller: %d failing invocations", len(sums))}
	d.heading = fmt.Sprintf("%d failing invocations (digest: more than this webhook's rate limit allows one by one)", len(sums))
	for i, s := range sums {
		if i == max {
			break
		}
		item := fmt.Sprintf("%s %s · %s/%s/%s · %s", s.command(), s.outcome(), s.Account, s.Source, s.Region, s.InvokeID)
		if s.Failed > 0 {
			item += fmt.Sprintf(" · %d failed", s.Failed)
		}
		d.items = append(d.items, item)
	}
	if len(sums) > max {
		type key struct{ command, outcome string }
		counts := map[key]int{}
		for _, s := range sums[max:] {
			counts[key{s.command(), s.outcome()}]++
		}
		keys := make([]key, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b key) int {
			return cmp.Or(cmp.Compare(counts[b], counts[a]), cmp.Compare(a.command, b.command), cmp.Compare(a.outcome, b.outcome))
		})
		parts := []string{}
		rest := 0
		for i, k := range keys {
			if i < max {
				parts = append(parts, fmt.Sprintf("%d × %s %s", counts[k], k.command, k.outcome))
			} else {
				rest += counts[k]
			}
		}
		if rest > 0 {
			parts = append(parts, fmt.Sprintf("%d of other commands", rest))
		}
		d.tail = append(d.tail, fmt.Sprintf("… and %d more: %s", len(sums)-max, strings.Join(parts, ", ")))
	}
	outs, others := digestOutputs(sums)
	for _, o := range outs {
		d.outputs = append(d.outputs, o.block())
	}
	if others > 0 {
		d.outputsTail = fmt.Sprintf("… and %s not shown", plural(others, "other output"))
	}
	return d
}

// A dialect renders a doc as one service's text. escape applies to every
// text but an output's lines, which code turns into a block they cannot
// break out of.
type dialect struct {
	bold   func(string) string
	escape func(string) string
	code   func(string) string
	bullet string
}

func identity(s string) string { return s }

// mdDialect is DingTalk's markdown: outputs in fenced code blocks.
func mdDialect() dialect {
	return dialect{bold: func(s string) string { return "**" + s + "**" }, escape: identity, code: fence, bullet: "- "}
}

// larkMd is Feishu's lark_md: markdown in which "<at …>" is a mention.
func larkMd() dialect {
	d := mdDialect()
	d.escape = breakMentions
	d.code = func(s string) string { return fence(breakMentions(s)) }
	return d
}

// slackMrkdwn is Slack's mrkdwn: &, < and > escaped everywhere (so that
// "<!channel>" is text, not a mention), outputs in code blocks.
func slackMrkdwn() dialect {
	esc := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")
	return dialect{bold: func(s string) string { return "*" + s + "*" }, escape: esc.Replace,
		code: func(s string) string { return fence(esc.Replace(s)) }, bullet: "• "}
}

// plainText is text without markup: each line of an output starts with
// "| ".
func plainText() dialect {
	return dialect{bold: identity, escape: identity, code: quoteLines, bullet: "- "}
}

// feishuText is plainText for a Feishu text message, in which "<at …>"
// is a mention.
func feishuText() dialect {
	return dialect{bold: identity, escape: breakMentions, code: func(s string) string { return quoteLines(breakMentions(s)) }, bullet: "- "}
}

// render is the whole doc in the dialect.
func (d doc) render(dl dialect) string {
	var b strings.Builder
	b.WriteString(d.renderMain(dl))
	for _, o := range d.outputs {
		b.WriteString("\n\n")
		b.WriteString(o.render(dl))
	}
	if d.outputsTail != "" {
		b.WriteString("\n\n")
		b.WriteString(dl.escape(d.outputsTail))
	}
	for _, l := range d.tail {
		b.WriteString("\n\n")
		b.WriteString(dl.escape(l))
	}
	return b.String()
}

// renderMain is the doc without its outputs and its tail.
func (d doc) renderMain(dl dialect) string {
	var b strings.Builder
	b.WriteString(dl.bold(dl.escape(d.heading)))
	for _, l := range d.lines {
		b.WriteString("\n\n")
		b.WriteString(dl.escape(l))
	}
	if len(d.items) > 0 {
		b.WriteString("\n\n")
		for i, it := range d.items {
			if i > 0 {
				b.WriteString("\n")
			}
			b.WriteString(dl.bullet + dl.escape(it))
		}
	}
	return b.String()
}

// render is an output in the dialect: its heading, its lines as a block,
// its notes.
func (o outputBlock) render(dl dialect) string {
	s := dl.escape(o.heading)
	if o.text != "" {
		s += "\n" + dl.code(o.text)
	}
	if o.notes != "" {
		s += "\n" + dl.escape(o.notes)
	}
	return s
}
