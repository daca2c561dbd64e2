package notify_test

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/publisher/events"
	"github.com/capoller/capoller/publisher/notify"
)

func TestNotifyConfigParses(t *testing.T) {
	env := map[string]string{"DT_URL": "https://oapi.dingtalk.com/robot/send?access_token=tok-dt", "DT_SECRET": "SECdt",
		"SLACK_URL": "https://hooks.slack.com/services/T/B/x"}
	files := map[string]string{"/run/secrets/feishu-url": "https://open.feishu.cn/open-apis/bot/v2/hook/abc\n", "/run/secrets/feishu-secret": "fs-secret\n"}
	yaml := `
group_window: 90s
settle: 1s
ack_wait: 45s
max_ack_pending: 1000
deliver: all
webhooks:
  - {name: ops-dt, kind: dingtalk, url_env: DT_URL, secret_env: DT_SECRET}
  - {name: ops-slack, kind: slack, url_env: SLACK_URL, blocks: true, retry: {initial: 2s, max_attempts: 3}}
  - {name: ops-feishu, kind: feishu, url_file: /run/secrets/feishu-url, secret_file: /run/secrets/feishu-secret, card: true}
  - {name: sink, kind: generic, url: "http://127.0.0.1:9/hook", limits: [{messages: 10, per: 1s}]}
rules:
  - name: prod-deploys
    accounts: [prod]
    sources: [ecs]
    regions: [cn-hangzhou]
    commands: [deploy]
    statuses: [failed, partial failed]
    webhooks: [ops-dt, ops-slack]
  - name: everything
`
	s, err := notify.ParseConfig([]byte(yaml), func(k string) string { return env[k] }, func(p string) ([]byte, error) {
		if v, ok := files[p]; ok {
			return []byte(v), nil
		}
		return nil, fs.ErrNotExist
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.GroupWindow != 90*time.Second || s.Settle != time.Second || s.AckWait != 45*time.Second || s.MaxAckPending != 1000 || !s.DeliverAll {
		t.Errorf("settings: %+v", s)
	}
	if len(s.Webhooks) != 4 || len(s.Rules) != 2 {
		t.Fatalf("%d webhooks, %d rules", len(s.Webhooks), len(s.Rules))
	}
	dt := s.Webhooks[0]
	if len(dt.Limits) != 1 || dt.Limits[0] != (notify.LimitConfig{Messages: 20, Per: time.Minute}) {
		t.Errorf("DingTalk's default limit: %+v", dt.Limits)
	}
	if fs := s.Webhooks[2]; len(fs.Limits) != 2 {
		t.Errorf("Feishu's default limits: %+v", fs.Limits)
	}
	if sl := s.Webhooks[1]; sl.Retry.Initial != 2*time.Second || sl.Retry.MaxAttempts != 3 || sl.Retry.MaxInterval != time.Minute {
		t.Errorf("Slack's retry: %+v", sl.Retry)
	}
	r := s.Rules[0]
	if r.Name != "prod-deploys" || len(r.Webhooks) != 2 || r.Statuses[1] != events.PartialFailed || len(r.InstanceStatuses) != 7 {
		t.Errorf("rule: %+v", r)
	}
	if all := s.Rules[1]; len(all.Webhooks) != 4 || len(all.Statuses) != 3 {
		t.Errorf("a rule without webhooks goes to all of them, with the default statuses: %+v", all)
	}
	// A webhook prints its name, never its URL or secret.
	for _, w := range s.Webhooks {
		if str := w.String(); strings.Contains(str, "tok-dt") || strings.Contains(str, "SECdt") || strings.Contains(str, "http") {
			t.Errorf("webhook %q prints a secret", str)
		}
	}
}

func TestNotifyConfigErrors(t *testing.T) {
	env := map[string]string{"DT_URL": "https://oapi.dingtalk.com/robot/send?access_token=sekrit-token"}
	hook := "webhooks: [{name: dt, kind: dingtalk, url_env: DT_URL}]\n"
	for _, c := range []struct {
		name, yaml, want string
	}{
		{"unknown top-level key", hook + "group_windw: 1m\n", "field group_windw not found"},
		{"unknown webhook key", "webhooks: [{name: dt, kind: dingtalk, url_env: DT_URL, secrte_env: X}]\n", "field secrte_env not found"},
		{"unknown rule key", hook + "rules: [{name: r, comands: [deploy]}]\n", "field comands not found"},
		{"unknown limit key", "webhooks: [{name: dt, kind: dingtalk, url_env: DT_URL, limits: [{messages: 1, every: 1s}]}]\n", "field every not found"},
		{"no webhooks", "rules: [{name: r}]\n", "at least one is needed"},
		{"unknown kind", "webhooks: [{name: x, kind: teams, url: 'https://x'}]\n", `kind "teams"`},
		{"inline token URL", "webhooks: [{name: dt, kind: dingtalk, url: 'https://oapi.dingtalk.com/robot/send?access_token=sekrit-token'}]\n", "give url_env or url_file"},
		{"unset env", "webhooks: [{name: dt, kind: dingtalk, url_env: NOPE}]\n", "NOPE is empty or unset"},
		{"missing file", "webhooks: [{name: dt, kind: dingtalk, url_file: /nonexistent}]\n", "url_file"},
		{"secret on slack", "webhooks: [{name: s, kind: slack, url_env: DT_URL, secret_env: DT_URL}]\n", "only DingTalk and Feishu"},
		{"two URL sources", "webhooks: [{name: g, kind: generic, url: 'http://x', url_env: DT_URL}]\n", "give one of url"},
		{"duplicate name", "webhooks: [{name: dt, kind: dingtalk, url_env: DT_URL}, {name: dt, kind: dingtalk, url_env: DT_URL}]\n", "used twice"},
		{"rule to a missing webhook", hook + "rules: [{name: r, webhooks: [nope]}]\n", `no webhook is named "nope"`},
		{"unknown status", hook + "rules: [{name: r, statuses: [Exploded]}]\n", `unknown status "Exploded"`},
		{"bad source", hook + "rules: [{name: r, sources: [rds]}]\n", "want ecs or swas"},
		{"bad deliver", hook + "deliver: sometimes\n", `deliver "sometimes"`},
		{"bad limit", "webhooks: [{name: dt, kind: dingtalk, url_env: DT_URL, limits: [{messages: 0, per: 1m}]}]\n", "must be positive"},
		{"bad duration", hook + "group_window: soon\n", "soon"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := notify.ParseConfig([]byte(c.yaml), func(k string) string { return env[k] }, func(string) ([]byte, error) { return nil, fs.ErrNotExist })
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
			if strings.Contains(err.Error(), "sekrit-token") {
				t.Errorf("the error quotes a secret: %v", err)
			}
		})
	}
	if _, err := notify.ParseConfig([]byte(hook), func(string) string { return "" }, nil); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("an unset URL variable: %v", err)
	}
}
