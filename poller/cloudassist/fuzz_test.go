package cloudassist

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/responses"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	swas "github.com/aliyun/alibaba-cloud-sdk-go/services/swas-open"

	"github.com/capoller/capoller/diff"
)

// The normalizers' fuzz targets decode their input as the SDK decodes a
// response body — responses.Unmarshal, with its json-iterator and fuzzy
// decoders — and hold every record that comes out to the rules the rest
// of capoller relies on. Their corpora are in testdata/fuzz/<name>/.

// decodeSDK decodes body into resp as the SDK does a 200 response; false
// when the SDK would have failed the call.
func decodeSDK(body []byte, resp responses.AcsResponse) bool {
	httpResp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(bytes.NewReader(body))}
	return responses.Unmarshal(resp, httpResp, "JSON") == nil
}

// addSamples seeds a fuzz target with the API documents' samples.
func addSamples(f *testing.F, names ...string) {
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// checkRecord holds one record to the rules: an id that is not blank
// (kept verbatim, white space and all: look-ups must match the API's) and
// a status, and an instance id on instance records.
func checkRecord(t *testing.T, r diff.Record, instance bool) {
	t.Helper()
	if strings.TrimSpace(r.InvokeID) == "" || r.Status == "" {
		t.Fatalf("record without id or status: %+v", r)
	}
	if r.InstanceID != "" && strings.TrimSpace(r.InstanceID) == "" {
		t.Fatalf("blank instance id: %q/%q", r.InvokeID, r.InstanceID)
	}
	if instance && r.InstanceID == "" {
		t.Fatalf("instance record without InstanceID: %+v", r)
	}
	if r.Status != diff.NormalizeStatus(string(r.Status)) {
		t.Fatalf("status %q is not normalized", r.Status)
	}
}

// count is how many records t counted as skipped.
func (t *tally) count() int {
	n := 0
	for _, c := range t.skipped {
		n += c.n
	}
	return n
}

func FuzzNormalizeECS(f *testing.F) {
	addSamples(f, "seed000_describe_invocations.json", "sdkdoc_parameters_object.json")
	f.Fuzz(func(t *testing.T, body []byte) {
		resp := ecs.CreateDescribeInvocationsResponse()
		if !decodeSDK(body, resp) {
			return
		}
		invs := resp.Invocations.Invocation
		for _, inv := range invs {
			tl := &tally{}
			recs := normalizeECS(inv, tl)
			id := inv.InvokeId // kept verbatim
			for i, r := range recs {
				checkRecord(t, r, i > 0 || r.InstanceID != "")
				if r.InvokeID != id {
					t.Fatalf("record of %q from invocation %q", r.InvokeID, inv.InvokeId)
				}
			}
			// Every record is either kept or counted as skipped.
			want := 1 + len(inv.InvokeInstances.InvokeInstance)
			if blank(id) {
				want = 1
			}
			if got := len(recs) + tl.count(); got != want {
				t.Fatalf("%d records kept + %d skipped, want %d", len(recs), tl.count(), want)
			}
		}
		// The chunker, on the same page: what it emits obeys the same rules.
		a := &ecsAPI{opts: Options{Region: region, Now: time.Now}, active: map[string]bool{}}
		var emitted []diff.Record
		ch := a.newChunker(true, func(s diff.Snapshot) error { emitted = append(emitted, s.Records...); return nil })
		if err := ch.page(invs); err != nil {
			t.Fatal(err)
		}
		for _, r := range append(emitted, ch.held...) {
			checkRecord(t, r, r.InstanceID != "")
		}
	})
}

func FuzzResultRecord(f *testing.F) {
	addSamples(f, "seed002_describe_invocation_results.json")
	f.Fuzz(func(t *testing.T, body []byte) {
		resp := ecs.CreateDescribeInvocationResultsResponse()
		if !decodeSDK(body, resp) {
			return
		}
		var kept []diff.Record
		tl := &tally{}
		rows := resp.Invocation.InvocationResults.InvocationResult
		for _, row := range rows {
			if r, ok := resultRecord(resultRow{InvocationResult: row}, tl); ok {
				checkRecord(t, r, true)
				kept = append(kept, r)
			}
		}
		if len(kept)+tl.count() != len(rows) {
			t.Fatalf("%d rows kept + %d skipped, want %d", len(kept), tl.count(), len(rows))
		}
		for _, r := range deriveAggregates(kept, func(id string) bool { return len(id)%2 == 0 }) { // both rules
			checkRecord(t, r, false)
		}
	})
}

func FuzzNormalizeSWAS(f *testing.F) {
	addSamples(f, "seed003_swas_describe_command_invocations.json")
	f.Fuzz(func(t *testing.T, body []byte) {
		resp := swas.CreateDescribeCommandInvocationsResponse()
		if !decodeSDK(body, resp) {
			return
		}
		for _, cmd := range resp.CommandInvocations {
			tl := &tally{}
			recs := normalizeSWAS(cmd, tl)
			id := cmd.InvokeId // kept verbatim
			for i, r := range recs {
				checkRecord(t, r, i > 0 || r.InstanceID != "")
				if r.InvokeID != id {
					t.Fatalf("record of %q from invocation %q", r.InvokeID, cmd.InvokeId)
				}
				if r.InstanceID != "" && r.Repeats != 0 && r.Repeats != 1 {
					t.Fatalf("SWAS run %d: SWAS has one run", r.Repeats)
				}
			}
			want := 1 + len(cmd.InvokeInstances)
			if blank(id) {
				want = 1
			}
			if got := len(recs) + tl.count(); got != want {
				t.Fatalf("%d records kept + %d skipped, want %d", len(recs), tl.count(), want)
			}
		}
	})
}

func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"", " ", "2019-12-20T06:15:55Z", "2023-04-27T10:11:58", "2023-04-27T10:11Z", "2023-04-27 10:11:58",
		"2023-04-27T10:11:58.123456789+08:00", "garbage"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseTime(s)
		if !ok {
			if !got.IsZero() {
				t.Fatalf("parseTime(%q) failed but returned %v", s, got)
			}
			return
		}
		if strings.TrimSpace(s) == "" && !got.IsZero() {
			t.Fatalf("parseTime(%q) = %v, want the zero time", s, got)
		}
		if got.Location() != time.UTC {
			t.Fatalf("parseTime(%q) is in %v, want UTC", s, got.Location())
		}
		text := got.Format(time.RFC3339Nano)
		back, ok := parseTime(text)
		if !ok || !back.Equal(got) {
			t.Fatalf("parseTime(%q) = %v, which formats as %q and parses back as %v (ok %v)", s, got, text, back, ok)
		}
	})
}
