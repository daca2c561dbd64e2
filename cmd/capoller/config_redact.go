package main

import "github.com/capoller/capoller/poller/sensitive"

// redacted returns c fit to show: its URLs redacted as redactURL does,
// and the secrets set inline (a NATS token or password, a Redis password)
// REDACTED. Files that hold secrets are named, never read.
func (c config) redacted() config {
	c.RedisURL, c.NATSURL, c.Endpoint = redactURL(c.RedisURL), redactURL(c.NATSURL), redactURL(c.Endpoint)
	for _, s := range []*string{&c.NATS.Token, &c.NATS.Password, &c.Redis.Password} {
		if *s != "" {
			*s = "REDACTED"
		}
	}
	return c
}

// redactURL is sensitive.RedactURL: the commands show URLs as the
// connections to NATS and Redis do in their errors.
func redactURL(raw string) string { return sensitive.RedactURL(raw) }
