package sensitive_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/poller/sensitive"
	"github.com/capoller/capoller/poller/testenv"
)

// TestRedactMessageKeepsTheCause holds redaction to the real error texts
// of net, go-redis, nats.go, net/http and the Alibaba SDK: with no secret
// in them, nothing changes ("connect: connection refused" is a cause, not
// a password); with a secret in a URL they quote, the secret goes and the
// cause stays.
func TestRedactMessageKeepsTheCause(t *testing.T) {
	addr := testenv.ClosedAddr(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var real []error
	_, err := net.Dial("tcp", addr)
	real = append(real, err)
	_, err = net.Dial("tcp", "redis.invalid:6379")
	real = append(real, err)
	rdb := redis.NewClient(&redis.Options{Addr: addr, Password: "hunter2", MaxRetries: -1})
	real = append(real, rdb.Ping(ctx).Err())
	_ = rdb.Close()
	opts, err := redis.ParseURL("redis://:hunter2@" + addr + "/0")
	if err != nil {
		t.Fatal(err)
	}
	opts.MaxRetries = -1
	rdb = redis.NewClient(opts)
	real = append(real, rdb.Ping(ctx).Err())
	_ = rdb.Close()
	_, err = nats.Connect("nats://" + addr)
	real = append(real, err)
	_, err = nats.Connect("nats://user:hunter2@"+addr, nats.Timeout(time.Second))
	real = append(real, err)
	_, err = http.Get("http://" + addr + "/?AccessKeyId=LTAIkey&SecurityToken=hunter2&Signature=sig")
	real = append(real, err)
	client, err := ecs.NewClientWithOptions("cn-hangzhou", sdk.NewConfig().WithScheme("HTTP").WithTimeout(2*time.Second),
		credentials.NewStsTokenCredential("LTAIkey", "hunter2", "hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	client.Domain = addr
	_, err = client.DescribeInvocations(ecs.CreateDescribeInvocationsRequest())
	real = append(real, err)
	real = append(real, errors.New("ERR DB index is out of range"), errors.New("WRONGPASS invalid username-password pair or user is disabled."),
		errors.New("nats: Authorization Violation"), errors.New("x509: certificate signed by unknown authority"))

	for _, err := range real {
		if err == nil {
			t.Fatal("a call to a closed port succeeded")
		}
		msg := err.Error()
		got := sensitive.RedactMessage(msg)
		if strings.Contains(got, "hunter2") {
			t.Errorf("RedactMessage(%q) = %q: the secret is still there", msg, got)
		}
		if !strings.Contains(msg, "hunter2") && got != msg {
			t.Errorf("RedactMessage(%q) = %q: changed a message that holds no secret", msg, got)
		}
		for _, cause := range []string{"connection refused", "no such host", "DB index is out of range", "WRONGPASS", "Authorization Violation", "unknown authority"} {
			if strings.Contains(msg, cause) && !strings.Contains(got, cause) {
				t.Errorf("RedactMessage(%q) = %q: the cause %q is gone", msg, got, cause)
			}
		}
		if got := sensitive.WithoutURL(err).Error(); strings.Contains(got, "hunter2") || strings.Contains(msg, "connection refused") && !strings.Contains(got, "connection refused") {
			t.Errorf("WithoutURL(%q) = %q: want the cause kept and the secret gone", msg, got)
		}
	}
	// A library's log line quoting a URL with credentials, and one without.
	for msg, want := range map[string]string{
		"redis: 2026/12/05 22:48:22 pool.go:770: dial tcp 127.0.0.1:6390: connect: connection refused": "redis: 2026/12/05 22:48:22 pool.go:770: dial tcp 127.0.0.1:6390: connect: connection refused",
		`sentinel: connecting to "redis://default:hunter2@10.0.0.1:26379/0" failed: i/o timeout`:       `sentinel: connecting to "redis://REDACTED@10.0.0.1:26379/0" failed: i/o timeout`,
		"auth with default:hunter2@10.0.0.1:6379 refused":                                              "auth with REDACTED@10.0.0.1:6379 refused",
		"mail ops@example.com about it":                                                                "mail ops@example.com about it",
	} {
		if got := sensitive.RedactMessage(msg); got != want {
			t.Errorf("RedactMessage(%q)\n = %q\nwant %q", msg, got, want)
		}
	}
}
