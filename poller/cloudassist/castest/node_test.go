package castest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNodeSDK runs testdata/node/sdk.js, the V2 Node SDK
// (@alicloud/ecs20140526, ACS3-HMAC-SHA256 by default), against casim:
// RunCommand, the command lifecycle, output in PlainText, and a wrong
// secret. It needs node and the pinned modules, which .ci/run installs
// with npm ci in testdata/node; without them it is skipped, saying why.
func TestNodeSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	dir := filepath.Join("testdata", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@alicloud", "ecs20140526")); err != nil {
		t.Skip("the Node SDK is not installed: run npm ci in " + dir)
	}
	s, base := newServer(t)
	cmd := exec.CommandContext(t.Context(), node, "sdk.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CASIM_ENDPOINT="+strings.TrimPrefix(base, "http://"), "CASIM_KEY_ID="+keyID,
		"CASIM_SECRET="+secret, "CASIM_INSTANCE="+ecsIDs(s, "cn-hangzhou")[0])
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node sdk.js: %v\n%s", err, stderr.String())
	}
	var got struct {
		RunStatus      string `json:"runStatus"`
		RunOutput      string `json:"runOutput"`
		InvokeStatus   string `json:"invokeStatus"`
		CommandContent string `json:"commandContent"`
		InvokeTimes    int    `json:"invokeTimes"`
		WrongSecret    string `json:"wrongSecret"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node sdk.js printed %q: %v", out, err)
	}
	if got.RunStatus != stSuccess || got.RunOutput != "from node" || got.InvokeStatus != stFailed ||
		got.CommandContent != "echo saved; exit 2" || got.InvokeTimes != 1 || got.WrongSecret != "SignatureDoesNotMatch" {
		t.Errorf("the Node SDK saw %+v", got)
	}
}
