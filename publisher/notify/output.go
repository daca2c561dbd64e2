package notify

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/capoller/capoller/publisher/events"
)

// The bounds of the output a message shows. A message shows at most
// MaxOutputs distinct outputs of an invocation's failing instances, each
// its last MaxOutputLines lines and at most MaxOutputBytes bytes of them
// (a longer last line keeps its end). Instances whose shown output is the
// same are shown once, with their count. A digest shows at most
// MaxDigestOutputs distinct outputs in all, each its last
// MaxDigestOutputLines lines and at most MaxDigestOutputBytes bytes.
const (
	MaxOutputs           = 3
	MaxOutputLines       = 10
	MaxOutputBytes       = 1500
	MaxDigestOutputs     = 3
	MaxDigestOutputLines = 3
	MaxDigestOutputBytes = 500
)

// maxOutputNames bounds the instances (or invocations) an output names.
const maxOutputNames = 3

// Output is the end of what one or more failing instances printed, the
// same for each of them: its last lines through [events.DisplayText],
// within [MaxOutputLines] and [MaxOutputBytes].
type Output struct {
	// Count is how many instances printed it; Instances names the first
	// few of them, in order.
	Count     int      `json:"count"`
	Instances []string `json:"instances"`
	// Text is the last lines, empty when Missing. Cut says that earlier
	// output is not shown.
	Text string `json:"text,omitempty"`
	Cut  bool   `json:"cut,omitempty"`
	// Dropped is what the API cut of it beyond its own bound (bytes).
	Dropped int64 `json:"dropped,omitempty"`
	// URI is where the API delivered the first instance's whole output
	// (OSS), if it did.
	URI string `json:"uri,omitempty"`
	// Missing: the output could not be read in time.
	Missing bool `json:"missing,omitempty"`
}

// DigestOutput is one of the few outputs a digest shows: the same last
// lines, within [MaxDigestOutputLines] and [MaxDigestOutputBytes], of
// instances of one or more invocations.
type DigestOutput struct {
	// Invocations names the first few invocations, InvocationCount counts
	// them, and Count their instances.
	Invocations     []string `json:"invocations"`
	InvocationCount int      `json:"invocationCount"`
	Count           int      `json:"count"`
	Text            string   `json:"text,omitempty"`
	Cut             bool     `json:"cut,omitempty"`
	Missing         bool     `json:"missing,omitempty"`
}

// excerpt is the last lines of s through events.DisplayText, at most
// lines of them and bytes bytes, and whether anything before them was
// left out.
func excerpt(s string, lines, bytes int) (string, bool) {
	ls := events.LastLines(s, lines+1)
	cut := len(ls) > lines
	if cut {
		ls = ls[1:]
	}
	size := -1
	for _, l := range ls {
		size += len(l) + 1
	}
	for len(ls) > 1 && size > bytes {
		size -= len(ls[0]) + 1
		ls, cut = ls[1:], true
	}
	if len(ls) == 1 && len(ls[0]) > bytes {
		l := ls[0]
		start := len(l) - (bytes - len("…"))
		for start < len(l) && !utf8.RuneStart(l[start]) {
			start++
		}
		ls, cut = []string{"…" + l[start:]}, true
	}
	return strings.Join(ls, "\n"), cut
}

// outputsOf groups the outputs of an invocation's failing instances (in
// the order to name them): instances whose excerpt is the same are one
// Output. It returns the MaxOutputs printed by the most instances (the
// first seen first among equals), and counts the others.
func outputsOf(instances []events.Event) (shown []Output, otherOutputs, otherInstances int) {
	type key struct {
		text         string
		cut, missing bool
		dropped      int64
	}
	var all []Output
	index := map[key]int{}
	for _, e := range instances {
		d := e.Data
		text, cut := excerpt(d.Output, MaxOutputLines, MaxOutputBytes)
		if text == "" && !d.OutputMissing && d.OutputDropped == 0 && d.OutputURI == "" {
			continue
		}
		k := key{text, cut, d.OutputMissing, d.OutputDropped}
		i, ok := index[k]
		if !ok {
			i = len(all)
			index[k] = i
			all = append(all, Output{Text: text, Cut: cut, Dropped: d.OutputDropped, URI: d.OutputURI, Missing: d.OutputMissing})
		}
		o := &all[i]
		o.Count++
		if len(o.Instances) < maxOutputNames {
			o.Instances = append(o.Instances, d.InstanceID)
		}
	}
	slices.SortStableFunc(all, func(a, b Output) int { return cmp.Compare(b.Count, a.Count) })
	if len(all) <= MaxOutputs {
		return all, 0, 0
	}
	for _, o := range all[MaxOutputs:] {
		otherOutputs++
		otherInstances += o.Count
	}
	return all[:MaxOutputs], otherOutputs, otherInstances
}

// digestOutputs groups the outputs of a digest's invocations by their
// shorter excerpt, and returns the MaxDigestOutputs of the most instances
// and how many other outputs there were.
func digestOutputs(sums []Summary) (shown []DigestOutput, others int) {
	type key struct {
		text         string
		cut, missing bool
	}
	var all []DigestOutput
	index := map[key]int{}
	last := map[int]string{} // the invocation an output was last counted for
	for _, s := range sums {
		for _, o := range s.Outputs {
			text, cut := excerpt(o.Text, MaxDigestOutputLines, MaxDigestOutputBytes)
			if text == "" && !o.Missing {
				continue
			}
			k := key{text, cut || o.Cut, o.Missing}
			i, ok := index[k]
			if !ok {
				i = len(all)
				index[k] = i
				all = append(all, DigestOutput{Text: text, Cut: k.cut, Missing: o.Missing})
			}
			d := &all[i]
			d.Count += o.Count
			if last[i] != s.InvokeID { // one invocation's outputs come together
				last[i] = s.InvokeID
				d.InvocationCount++
				if len(d.Invocations) < maxOutputNames {
					d.Invocations = append(d.Invocations, s.InvokeID)
				}
			}
		}
	}
	slices.SortStableFunc(all, func(a, b DigestOutput) int { return cmp.Compare(b.Count, a.Count) })
	if len(all) <= MaxDigestOutputs {
		return all, 0
	}
	return all[:MaxDigestOutputs], len(all) - MaxDigestOutputs
}

// names lists the first few of count names, "…" for the rest.
func names(first []string, count int) string {
	s := strings.Join(first, ", ")
	if count > len(first) {
		s += ", …"
	}
	return s
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// An outputBlock is one output in a doc: a heading line, the output's
// lines (none when it is missing), and notes after them.
type outputBlock struct {
	heading string
	text    string
	notes   string
}

func lineCount(text string) int { return strings.Count(text, "\n") + 1 }

func (o Output) block() outputBlock {
	who := o.Instances[0]
	if o.Count > 1 {
		who = fmt.Sprintf("%d instances (%s)", o.Count, names(o.Instances, o.Count))
	}
	b := outputBlock{text: o.Text}
	switch {
	case o.Missing:
		b.heading = who + ": output missing (it could not be read in time)"
	case o.Text == "":
		b.heading = who + ": no output shown"
	case o.Cut:
		b.heading = fmt.Sprintf("Output of %s, last %s:", who, plural(lineCount(o.Text), "line"))
	default:
		b.heading = fmt.Sprintf("Output of %s:", who)
	}
	var notes []string
	if o.Dropped > 0 {
		notes = append(notes, fmt.Sprintf("(%d bytes dropped by the API)", o.Dropped))
	}
	if o.URI != "" {
		if o.Count > 1 {
			notes = append(notes, fmt.Sprintf("full output of %s: %s", o.Instances[0], o.URI))
		} else {
			notes = append(notes, "full output: "+o.URI)
		}
	}
	b.notes = strings.Join(notes, " · ")
	return b
}

func (o DigestOutput) block() outputBlock {
	who := fmt.Sprintf("%s of %s", plural(o.Count, "instance"), o.Invocations[0])
	if o.InvocationCount > 1 {
		who = fmt.Sprintf("%s of %d invocations (%s)", plural(o.Count, "instance"), o.InvocationCount, names(o.Invocations, o.InvocationCount))
	}
	b := outputBlock{text: o.Text}
	switch {
	case o.Missing:
		b.heading = who + ": output missing (it could not be read in time)"
	case o.Cut:
		b.heading = fmt.Sprintf("Output of %s, last %s:", who, plural(lineCount(o.Text), "line"))
	default:
		b.heading = fmt.Sprintf("Output of %s:", who)
	}
	return b
}

// breakFences keeps a text from closing a backtick fence (or opening an
// inline code span across it): a zero-width space goes between any two
// backticks, so that no run of them remains.
func breakFences(s string) string {
	if !strings.Contains(s, "``") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '`' && i > 0 && s[i-1] == '`' {
			b.WriteString("\u200b")
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// breakMentions keeps Feishu from reading "<at …>" in a text as a
// mention (<at user_id="all"> would notify everyone): a zero-width space
// follows a "<" before "at", in any case.
func breakMentions(s string) string {
	if !strings.Contains(s, "<") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteByte(s[i])
		if s[i] == '<' && i+2 < len(s) && (s[i+1]|0x20) == 'a' && (s[i+2]|0x20) == 't' {
			b.WriteString("\u200b")
		}
	}
	return b.String()
}

// fence is a text as a fenced code block that it cannot close.
func fence(text string) string { return "```\n" + breakFences(text) + "\n```" }

// quoteLines prefixes each line of a text with "| ", so that no line of
// it can pass for a line of the message in plain text.
func quoteLines(text string) string {
	return "| " + strings.ReplaceAll(text, "\n", "\n| ")
}
