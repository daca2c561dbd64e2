package main

import (
	"flag"
	"slices"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/publisher"
)

// natsAuthSettings are the settings of publisher.NATSAuth. notify takes
// them too (see bindSettings).
func natsAuthSettings() []setting {
	field := func(f func(*publisher.NATSAuth) *string) func(*config, string) error {
		return str(func(c *config) *string { return f(&c.NATS) })
	}
	return []setting{
		{"nats-creds", "NATS credentials file: a user JWT and its nkey seed, as nsc writes them", field(func(a *publisher.NATSAuth) *string { return &a.Creds })},
		{"nats-nkey-seed", "NATS nkey seed file (a user seed, SU…; renamed from nats-nkey, one letter from nats-key)", field(func(a *publisher.NATSAuth) *string { return &a.Nkey })},
		{"nats-token", "NATS authentication token: set it in the environment, or use nats-token-file", field(func(a *publisher.NATSAuth) *string { return &a.Token })},
		{"nats-token-file", "file holding the NATS authentication token", field(func(a *publisher.NATSAuth) *string { return &a.TokenFile })},
		{"nats-user", "NATS user, with nats-password", field(func(a *publisher.NATSAuth) *string { return &a.User })},
		{"nats-password", "NATS user's password: set it in the environment, or use nats-password-file", field(func(a *publisher.NATSAuth) *string { return &a.Password })},
		{"nats-password-file", "file holding the NATS user's password", field(func(a *publisher.NATSAuth) *string { return &a.PasswordFile })},
		{"nats-ca", "PEM file of the CAs that sign the NATS servers' certificates (default the system's); turns TLS on", field(func(a *publisher.NATSAuth) *string { return &a.CA })},
		{"nats-cert", "PEM client certificate for NATS servers that verify clients, with nats-key; turns TLS on", field(func(a *publisher.NATSAuth) *string { return &a.Cert })},
		{"nats-key", "PEM private key of nats-cert", field(func(a *publisher.NATSAuth) *string { return &a.Key })},
	}
}

// redisAuthSettings are the settings of checkpoint.RedisAuth.
func redisAuthSettings() []setting {
	field := func(f func(*checkpoint.RedisAuth) *string) func(*config, string) error {
		return str(func(c *config) *string { return f(&c.Redis) })
	}
	return []setting{
		{"redis-username", "Redis ACL user, instead of the redis-url's", field(func(a *checkpoint.RedisAuth) *string { return &a.Username })},
		{"redis-password", "Redis password, instead of the redis-url's: set it in the environment, or use redis-password-file", field(func(a *checkpoint.RedisAuth) *string { return &a.Password })},
		{"redis-password-file", "file holding the Redis password", field(func(a *checkpoint.RedisAuth) *string { return &a.PasswordFile })},
		{"redis-ca", "PEM file of the CAs that sign the Redis servers' certificates (default the system's), with a rediss URL", field(func(a *checkpoint.RedisAuth) *string { return &a.CA })},
		{"redis-cert", "PEM client certificate for Redis servers that verify clients (tls-auth-clients), with redis-key and a rediss URL", field(func(a *checkpoint.RedisAuth) *string { return &a.Cert })},
		{"redis-key", "PEM private key of redis-cert", field(func(a *checkpoint.RedisAuth) *string { return &a.Key })},
	}
}

// bindSettings registers list on fs for a command that takes only these
// of run's settings (notify takes NATS's): the environment,
// CAPOLLER_<NAME>, sets c first and a flag over it, as in loadConfig.
func bindSettings(fs *flag.FlagSet, list []setting, c *config, getenv func(string) string) {
	defaults := settingDefaults(*c)
	for _, s := range list {
		if v := getenv(envName(s.name)); v != "" {
			_ = s.set(c, v) // strings: they take any value
		}
		usage := s.usage + " (env " + envName(s.name) + ")"
		if d := defaults[s.name]; d != "" {
			usage = s.usage + " (default " + d + ", env " + envName(s.name) + ")"
		}
		fs.Func(s.name, usage, func(v string) error { return s.set(c, v) })
	}
}

// settingsNamed returns the settings of these names, for a subcommand that
// takes a few of run's.
func settingsNamed(names ...string) []setting {
	var out []setting
	for _, s := range settings() {
		if slices.Contains(names, s.name) {
			out = append(out, s)
		}
	}
	return out
}
