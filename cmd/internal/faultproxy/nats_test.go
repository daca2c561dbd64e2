package faultproxy

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// The scanner finds every PUB and HPUB, whatever the chunks, and nothing
// in payloads or other operations.
func TestNATSPublishesScansAcrossChunks(t *testing.T) {
	stream := "CONNECT {\"verbose\":false,\"headers\":true}\r\nPING\r\n" +
		"SUB a.> 1\r\n" +
		"PUB ev.one 12\r\nPUB fake 3\r\n\r\n" +
		"HPUB ev.two _INBOX.x 24 28\r\nNATS/1.0\r\nK: PUB y 1\r\n\r\nbody\r\n" +
		"pub ev.three reply 0\r\n\r\n" +
		"PUB broken\r\n" + // no size: skipped, framing kept
		"UNSUB 1\r\nPONG\r\n" +
		"HPUB ev.four 12 12\r\nNATS/1.0\r\n\r\n\r\n"
	want := []string{"ev.one", "ev.two", "ev.three", "ev.four"}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var got []string
		tap := NATSPublishes(func(s string, swallowed bool) {
			if swallowed != (round%2 == 1) {
				t.Errorf("swallowed %v in round %d", swallowed, round)
			}
			got = append(got, s)
		})
		for rest := stream; rest != ""; {
			n := 1 + rng.IntN(len(rest))
			if round == 0 {
				n = 1 // byte by byte
			}
			tap([]byte(rest[:n]), round%2 == 1)
			rest = rest[n:]
		}
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: %v, want %v", round, got, want)
		}
	}
	// A line past the bound is dropped; the next one is read.
	var got []string
	tap := NATSPublishes(func(s string, _ bool) { got = append(got, s) })
	tap([]byte(strings.Repeat("x", maxControlLine+1)), false)
	tap([]byte("\r\nPUB after 0\r\n\r\n"), false)
	if !slices.Equal(got, []string{"after"}) {
		t.Errorf("after an overlong line: %v", got)
	}
}
