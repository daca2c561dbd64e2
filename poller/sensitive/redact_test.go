package sensitive

import (
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		secrets []string
		want    string // "" to check only that the secrets are gone
	}{
		{"nats://mytoken@host:4222", []string{"mytoken"}, "nats://REDACTED@host:4222"},
		{"nats://user:s3cret@host:4222", []string{"user", "s3cret"}, "nats://REDACTED@host:4222"},
		{"redis://:s3cret@127.0.0.1:6379/0", []string{"s3cret"}, "redis://REDACTED@127.0.0.1:6379/0"},
		{"nats://user:s3cret@host:99999999/%zz", []string{"user", "s3cret"}, "nats://REDACTED@host:99999999/%zz"},
		{"nats://us%zzer:s3cret@host:4222", []string{"s3cret"}, "nats://REDACTED@host:4222"},
		{"nats://user:s3c@ret@host:4222", []string{"s3c", "ret@host"}, "nats://REDACTED@host:4222"},
		{"nats://user:s3c/ret@host:4222", []string{"s3c", "ret@host"}, ""},
		{"nats://user:s3cret", []string{"s3cret"}, "nats://user:REDACTED"},
		{"user:s3cret@host:4222", []string{"s3cret"}, ""},
		{"mytoken@host:4222", []string{"mytoken"}, "REDACTED@host:4222"},
		{"nats:///user:s3cret@host", []string{"s3cret"}, ""},
		{"rediss://h:6380/0?PASSWORD=s3cret&db=1", []string{"s3cret"}, "rediss://h:6380/0?PASSWORD=REDACTED&db=1"},
		{"http://h/x?Token=s3cret", []string{"s3cret"}, "http://h/x?Token=REDACTED"},
		{"http://h/?AccessKeyId=LTAIs3cret&AccessKeySecret=k3y&Signature=s1g&SecurityToken=st0k&Action=RunCommand",
			[]string{"LTAIs3cret", "k3y", "s1g", "st0k"}, "http://h/?AccessKeyId=REDACTED&AccessKeySecret=REDACTED&Signature=REDACTED&SecurityToken=REDACTED&Action=RunCommand"},
		{"http://h/?pwd=a&pass=b1&secret=c1&auth=d1&key=e1&access_key_id=f1&client-secret=g1", []string{"=a", "b1", "c1", "d1", "e1", "f1", "g1"}, ""},
		{"http://h/?password=s3c,ret&x=1", []string{"s3c", "ret"}, "http://h/?password=REDACTED&x=1"},
		{"redis://h/%zz?password=s3cret", []string{"s3cret"}, "redis://h/%zz?password=REDACTED"},
		{"nats://tok1@a:4222,nats://u:pw2@b:4222, tok3@c:4222,d:4222", []string{"tok1", "pw2", "tok3"}, "nats://REDACTED@a:4222,nats://REDACTED@b:4222,REDACTED@c:4222,d:4222"},
		{"nats://a:4222?token=t1,nats://b:4222?token=t2", []string{"t1", "t2"}, "nats://a:4222?token=REDACTED,nats://b:4222?token=REDACTED"},
		{"nats://user:pa,ss@host:4222", []string{"pa", "ss"}, ""},
		{"nats://127.0.0.1:4222", nil, "nats://127.0.0.1:4222"},
		{"unix:///tmp/redis.sock", nil, "unix:///tmp/redis.sock"},
		{"", nil, ""},
	} {
		got := RedactURL(tc.raw)
		for _, s := range tc.secrets {
			if strings.Contains(got, s) {
				t.Errorf("RedactURL(%q) = %q: shows %q", tc.raw, got, s)
			}
		}
		if tc.want != "" && got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}
