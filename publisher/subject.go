package publisher

import (
	"errors"
	"fmt"
	"strings"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/publisher/events"
)

// Subject returns the subject of a transition:
//
//	<prefix>.<source>.<region>.<level>.<status>.<invokeId>[.<instanceId>]
//
// with the status in lower case and every token made by [Token].
func Subject(prefix string, t diff.Transition) (string, error) {
	tokens := []string{string(t.Source), t.Region, string(t.Level()), strings.ToLower(string(t.Record.Status)), t.Record.InvokeID}
	if t.Record.InstanceID != "" {
		tokens = append(tokens, t.Record.InstanceID)
	}
	var b strings.Builder
	n := len(prefix)
	for _, tok := range tokens {
		n += 1 + len(tok)
	}
	b.Grow(n) // once, for tokens that need no escaping
	b.WriteString(prefix)
	for _, tok := range tokens {
		if tok == "" {
			return "", fmt.Errorf("publisher: event %s has an empty subject token", t.ID)
		}
		b.WriteByte('.')
		b.WriteString(events.Token(tok))
	}
	return b.String(), nil
}

// ValidPrefix checks a subject prefix: one or more plain tokens separated
// by dots, at most events.MaxTokenLen bytes in all.
func ValidPrefix(prefix string) error {
	if prefix == "" {
		return errors.New("publisher: the subject prefix is empty")
	}
	if len(prefix) > events.MaxTokenLen {
		return fmt.Errorf("publisher: subject prefix of %d bytes: at most %d", len(prefix), events.MaxTokenLen)
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" || events.EscapeToken(tok) != tok {
			return fmt.Errorf("publisher: subject prefix %q: tokens must be non-empty and use only [A-Za-z0-9_-]", prefix)
		}
	}
	return nil
}
