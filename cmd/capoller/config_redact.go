package main

import "github.com/capoller/capoller/poller/sensitive"

// redacted returns c fit to show: its URLs redacted (sensitive.RedactURL),
// and the secrets set inline (a NATS token or password, a Redis password)
// REDACTED. Files that hold secrets are named, never read.
func (c config) redacted() config {
	c.RedisURL, c.NATSURL, c.Endpoint = sensitive.RedactURL(c.RedisURL), sensitive.RedactURL(c.NATSURL), sensitive.RedactURL(c.Endpoint)
	for _, s := range []*string{&c.NATS.Token, &c.NATS.Password, &c.Redis.Password, &c.Hints.Token} {
		if *s != "" {
			*s = "REDACTED"
		}
	}
	return c
}
