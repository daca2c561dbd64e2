package cloudassist

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/capoller/capoller/diff"
)

// FuzzOutputDecode: any bytes the API sends as Output, Base64 or not,
// decode to valid UTF-8 without panicking; Base64 of valid text decodes
// to that text, and text that is not Base64 is kept as sent.
func FuzzOutputDecode(f *testing.F) {
	f.Add([]byte("MTU6MzA6MDEK"), true)
	f.Add([]byte("plain text\n"), false)
	f.Add([]byte("\x00\xff\xfe\x1b[31mred\x1b[0m"), true)
	f.Add([]byte("not base64!"), true)
	f.Fuzz(func(t *testing.T, raw []byte, isBase64 bool) {
		got := decodeOutput(string(raw), isBase64)
		if !utf8.ValidString(got) {
			t.Fatalf("decodeOutput(%q, %v) = %q: not valid UTF-8", raw, isBase64, got)
		}
		if utf8.Valid(raw) {
			if enc := decodeOutput(base64.StdEncoding.EncodeToString(raw), true); enc != string(raw) {
				t.Fatalf("Base64 of %q decoded to %q", raw, enc)
			}
			if !isBase64 && got != string(raw) {
				t.Fatalf("plain %q became %q", raw, got)
			}
		}
	})
}

// FuzzRedactionAcrossTheCut: a secret anywhere in a long output, however
// the output is cut to its bound, leaves no piece of itself in the text
// an event carries.
func FuzzRedactionAcrossTheCut(f *testing.F) {
	f.Add([]byte("hunter2-and-more"), 100, 50, 0, 64)
	f.Add([]byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8}, 8000, 300, 1, 8192)
	f.Add([]byte("key"), 10, 9000, 2, 200)
	f.Add([]byte("0123456789abcdef0123"), 5000, 5000, 3, 1000)
	f.Fuzz(func(t *testing.T, seed []byte, before, after, kind, maxBytes int) {
		if len(seed) < 4 || len(seed) > 64 {
			return
		}
		before, after = min(abs(before), 30000), min(abs(after), 30000)
		maxBytes = 64 + abs(maxBytes)%16384
		hexed := hex.EncodeToString(seed) // the secret's alphabet: [0-9a-f], which the filler never uses
		var secret, printed string
		switch abs(kind) % 4 {
		case 0:
			secret = "s" + hexed
			printed = "password=" + secret
		case 1:
			secret = "t" + hexed
			printed = `{"token": "` + secret + `"}`
		case 2:
			secret = "LTAI" + strings.ToUpper(hexed)[:min(len(hexed), 24)]
			if len(secret) < 16 {
				return // not an AccessKey ID's shape
			}
			printed = "using " + secret + " now"
		case 3:
			body := strings.Repeat(hexed+"\n", 1+1500/len(hexed))
			secret = body
			printed = "-----BEGIN RSA PRIVATE KEY-----\n" + body + "-----END RSA PRIVATE KEY-----"
		}
		text := strings.Repeat("x", before) + printed + strings.Repeat("y", after)
		v := newVetter(OutputOptions{For: OutputFailures, MaxBytes: maxBytes})
		rec := diff.Record{Key: diff.Key{InvokeID: "t", InstanceID: "i"}, Status: diff.StatusFailed}
		rec.Output, rec.OutputRaw = text, true
		v.vet(&rec)
		if len(rec.Output) > maxBytes {
			t.Fatalf("%d bytes kept, over the bound of %d", len(rec.Output), maxBytes)
		}
		for _, piece := range pieces(secret, 6) {
			if strings.Contains(rec.Output, piece) {
				t.Fatalf("a piece of the secret %q is left in %q (bound %d, %d before, %d after)", piece, fmt.Sprintf("%.200s", rec.Output), maxBytes, before, after)
			}
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// pieces lists the substrings of s of n bytes that hold no newline.
func pieces(s string, n int) []string {
	var out []string
	for i := 0; i+n <= len(s); i++ {
		if p := s[i : i+n]; !strings.Contains(p, "\n") {
			out = append(out, p)
		}
	}
	return out
}
