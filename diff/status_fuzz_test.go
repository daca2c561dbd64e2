package diff

import (
	"slices"
	"strings"
	"testing"
)

// FuzzNormalizeStatus: any text normalizes without panicking, once and for
// all (normalizing again changes nothing), to a documented status in its
// canonical spelling or to the text itself, trimmed.
func FuzzNormalizeStatus(f *testing.F) {
	canonicals := []Status{StatusPending, StatusScheduled, StatusRunning, StatusStopping, StatusSuccess, StatusFailed,
		StatusPartialFailed, StatusStopped, StatusFinished, StatusInvalid, StatusAborted, StatusError, StatusTimeout,
		StatusCancelled, StatusTerminated}
	for _, s := range []string{"", " ", "finished", " running ", "Partial Failed", "canceled", "CANCELLED", "Quarantined",
		"\u00a0Success\u2003", "İnvalid", "\xffpending", "run\x00ning"} {
		f.Add(s)
	}
	for _, s := range canonicals {
		f.Add(string(s))
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := NormalizeStatus(s)
		if again := NormalizeStatus(string(got)); again != got {
			t.Fatalf("NormalizeStatus(%q) = %q, but NormalizeStatus(%q) = %q", s, got, got, again)
		}
		if got.Known() {
			if !slices.Contains(canonicals, got) {
				t.Fatalf("NormalizeStatus(%q) = %q: known, but not in its canonical spelling", s, got)
			}
		} else if string(got) != strings.TrimSpace(s) {
			t.Fatalf("NormalizeStatus(%q) = %q: unknown, but not the text trimmed", s, got)
		}
		if (strings.TrimSpace(s) == "") != (got == "") {
			t.Fatalf("NormalizeStatus(%q) = %q: empty exactly when the text is blank", s, got)
		}
	})
}
