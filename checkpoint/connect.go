package checkpoint

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/poller/sensitive"
)

// The forms of redis-url:
//
//	redis://[user:password@]host[:port][/db][?option=value&…]
//	    one server, as go-redis's ParseURL reads it (rediss:// with TLS).
//
//	redis+cluster://[user:password@]host[:port],host[:port],…[/][?option=value&…]
//	    a Redis Cluster, found from any of the listed nodes (rediss+cluster://
//	    with TLS). A cluster has only database 0.
//
//	redis+sentinel://[user:password@]host[:port],host[:port],…/master[/db][?option=value&…]
//	    the master that the listed sentinels know as master, and that they
//	    fail over (rediss+sentinel:// with TLS, to the sentinels and the
//	    servers). The user information is the servers' (requirepass or an ACL
//	    user); sentinels that require a password of their own take the options
//	    sentinel_password and sentinel_username.
//
// A host without a port is on 6379, a sentinel on 26379. The options are
// go-redis's (dial_timeout, read_timeout, pool_size, max_retries…, and
// skip_verify with TLS); those the URL itself states (addr, master_name,
// username, password, db) are refused in the cluster and sentinel forms. A
// password holding "/", "?", "#", "@" or "," must be percent-encoded.
const (
	schemeCluster     = "redis+cluster"
	schemeClusterTLS  = "rediss+cluster"
	schemeSentinel    = "redis+sentinel"
	schemeSentinelTLS = "rediss+sentinel"

	defaultRedisPort    = "6379"
	defaultSentinelPort = "26379"
)

// RedisAuth is how to authenticate to Redis and check its certificates,
// over what the URL of [OpenRedis] says: Username and a password (Password
// or PasswordFile) replace the URL's user information, and CA, Cert and
// Key complete the TLS of a rediss:// URL (rediss+cluster://,
// rediss+sentinel://: the sentinels' too). Its YAML keys are the names of
// capoller's settings, which its errors name.
type RedisAuth struct {
	// Username is an ACL user; it needs a password, here or in the URL.
	Username string `yaml:"redis-username"`
	// Password, or the file PasswordFile holds (read at each OpenRedis):
	// at most one of the two.
	Password     string `yaml:"redis-password"`
	PasswordFile string `yaml:"redis-password-file"`
	// CA names the PEM file of the CAs that sign the servers' certificates
	// (default the system's); Cert and Key a client certificate, for
	// servers that verify clients. Only with a rediss URL.
	CA   string `yaml:"redis-ca"`
	Cert string `yaml:"redis-cert"`
	Key  string `yaml:"redis-key"`
}

// redisTarget is what a redis-url names: exactly one of its fields is set.
type redisTarget struct {
	single   *redis.Options
	cluster  *redis.ClusterOptions
	failover *redis.FailoverOptions
}

// client builds the client of the target; it does not connect yet.
func (r redisTarget) client() redis.UniversalClient {
	switch {
	case r.cluster != nil:
		return redis.NewClusterClient(r.cluster)
	case r.failover != nil:
		return redis.NewFailoverClient(r.failover)
	default:
		return redis.NewClient(r.single)
	}
}

// OpenRedis returns a client of the Redis server, Cluster or Sentinel-run
// master that the URL names (see the forms above), with the user,
// password and TLS files of auth over the URL's: what [NewRedis] takes.
// It does not connect: the client dials on its first command. Its errors
// start with "redis-url <url>", the URL redacted (user information and
// password options as REDACTED), or with the setting of auth at fault,
// and never quote a password.
func OpenRedis(raw string, auth RedisAuth) (redis.UniversalClient, error) {
	target, err := redisTargetOf(raw, auth)
	if err != nil {
		return nil, err
	}
	return target.client(), nil
}

// CheckRedisURL reports whether [OpenRedis] would accept the URL and
// auth, for a configuration's validation.
func CheckRedisURL(raw string, auth RedisAuth) error {
	_, err := redisTargetOf(raw, auth)
	return err
}

// redisTargetOf reads a redis-url and applies auth to it.
func redisTargetOf(raw string, auth RedisAuth) (redisTarget, error) {
	target, err := parseRedisURL(raw)
	if err != nil {
		return redisTarget{}, err
	}
	scheme, _, _ := strings.Cut(raw, "://") // parseRedisURL accepted it: a scheme, no secret
	if err := auth.apply(target, strings.ToLower(scheme)); err != nil {
		return redisTarget{}, err
	}
	return target, nil
}

// parseRedisURL reads a redis-url.
func parseRedisURL(raw string) (redisTarget, error) {
	target, err := parseRedisTarget(raw)
	if err != nil {
		return redisTarget{}, fmt.Errorf("redis-url %s: %w", sensitive.RedactURL(raw), err)
	}
	return target, nil
}

// redisURLForms names the accepted schemes, for error messages.
const redisURLForms = "want redis://, rediss://, redis+cluster://host:port,host:port… or redis+sentinel://host:port,…/master (or rediss+…)"

func parseRedisTarget(raw string) (redisTarget, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return redisTarget{}, errors.New(redisURLForms)
	}
	scheme = strings.ToLower(scheme)
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	// An "@" past the hosts is a password's "/", "?" or "#" that was not
	// percent-encoded: what follows it would be read, and quoted, as a
	// path or database.
	if path, _, _ := strings.Cut(tail, "?"); strings.Contains(path, "@") {
		return redisTarget{}, errors.New(`an "@" after the host: percent-encode "/", "?", "#" and "@" in the user information (%2F, %3F, %23, %40)`)
	}
	hostPart := authority
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		hostPart = authority[at+1:]
	}
	switch scheme {
	case "redis", "rediss":
		if strings.Contains(hostPart, ",") {
			return redisTarget{}, errors.New("several hosts: use redis+cluster:// for a Redis Cluster, or redis+sentinel://…/master for Sentinel")
		}
		if hostPart != "" { // empty: go-redis's localhost:6379
			if _, err := splitHosts(hostPart, defaultRedisPort); err != nil {
				return redisTarget{}, err
			}
		}
		opts, err := redis.ParseURL(raw)
		if err != nil {
			return redisTarget{}, sensitive.WithoutURL(err)
		}
		return redisTarget{single: opts}, nil
	case schemeCluster, schemeClusterTLS, schemeSentinel, schemeSentinelTLS:
	default:
		return redisTarget{}, errors.New(redisURLForms)
	}

	sentinel := scheme == schemeSentinel || scheme == schemeSentinelTLS
	port := defaultRedisPort
	if sentinel {
		port = defaultSentinelPort
	}
	hosts, err := splitHosts(hostPart, port)
	if err != nil {
		return redisTarget{}, err
	}
	user, password, err := userInfo(authority)
	if err != nil {
		return redisTarget{}, err
	}
	path, rawQuery, _ := strings.Cut(tail, "?")
	if strings.Contains(path, "#") || strings.Contains(rawQuery, "#") {
		return redisTarget{}, errors.New(`a "#" in the URL: percent-encode it (%23)`)
	}
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		return redisTarget{}, errors.New("the options are not validly percent-encoded")
	}
	for _, name := range []string{"addr", "master_name", "username", "password", "db"} {
		if query.Has(name) {
			return redisTarget{}, fmt.Errorf("option %s: the URL states it (hosts, /master/db, user information)", name)
		}
	}
	var tlsConfig *tls.Config
	if strings.HasPrefix(scheme, "rediss") {
		// No ServerName: each node's certificate is checked against the
		// address it is dialled at, which differs from node to node.
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if v := query.Get("skip_verify"); v != "" {
			skip, err := strconv.ParseBool(v)
			if err != nil {
				return redisTarget{}, errors.New("option skip_verify: want true or false")
			}
			tlsConfig.InsecureSkipVerify = skip
		}
	} else if query.Has("skip_verify") {
		return redisTarget{}, errors.New("option skip_verify: only with TLS, rediss+cluster:// or rediss+sentinel://")
	}
	query.Del("skip_verify")
	for _, h := range hosts[1:] {
		query.Add("addr", h)
	}

	if !sentinel {
		if path != "" && path != "/" && path != "/0" {
			return redisTarget{}, errors.New("a path: a Redis Cluster has only database 0, so the URL ends at the hosts (or /)")
		}
		for _, name := range []string{"sentinel_username", "sentinel_password"} {
			if query.Has(name) {
				return redisTarget{}, fmt.Errorf("option %s: only for redis+sentinel://", name)
			}
		}
		// Credentials and TLS are set below, never passed through a URL:
		// go-redis's errors then cannot quote them.
		opts, err := redis.ParseClusterURL("redis://" + hosts[0] + "/?" + query.Encode())
		if err != nil {
			return redisTarget{}, sensitive.WithoutURL(err)
		}
		opts.Username, opts.Password, opts.TLSConfig = user, password, tlsConfig
		return redisTarget{cluster: opts}, nil
	}

	segments := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(segments) > 2 || segments[0] == "" {
		return redisTarget{}, errors.New("want the master's name after the sentinels, and at most a database after it: redis+sentinel://host:port,…/master[/db]")
	}
	master, err := url.PathUnescape(segments[0])
	if err != nil || master == "" {
		return redisTarget{}, errors.New("the master's name is not validly percent-encoded")
	}
	db := "0"
	if len(segments) == 2 {
		if n, err := strconv.Atoi(segments[1]); err != nil || n < 0 {
			return redisTarget{}, errors.New("the database after the master's name: want a number")
		}
		db = segments[1]
	}
	sentinelUser, sentinelPassword := query.Get("sentinel_username"), query.Get("sentinel_password")
	query.Del("sentinel_username")
	query.Del("sentinel_password")
	query.Set("master_name", master)
	opts, err := redis.ParseFailoverURL("redis://" + hosts[0] + "/" + db + "?" + query.Encode())
	if err != nil {
		return redisTarget{}, sensitive.WithoutURL(err)
	}
	opts.Username, opts.Password = user, password
	opts.SentinelUsername, opts.SentinelPassword = sentinelUser, sentinelPassword
	opts.TLSConfig = tlsConfig
	return redisTarget{failover: opts}, nil
}

// splitHosts reads a comma-separated list of host[:port], giving a host
// without one the default port. Errors name a host by its place in the
// list, never by its text: a mangled one may be a password.
func splitHosts(list, defaultPort string) ([]string, error) {
	parts := strings.Split(list, ",")
	hosts := make([]string, 0, len(parts))
	for i, p := range parts {
		if p == "" {
			return nil, fmt.Errorf("host %d of %d is empty", i+1, len(parts))
		}
		u, err := url.Parse("redis://" + p)
		if err != nil || u.Host != p || u.User != nil || u.Hostname() == "" || strings.Contains(u.Hostname(), ":") && !strings.HasPrefix(p, "[") {
			return nil, fmt.Errorf("host %d of %d: want host, host:port or [ipv6]:port", i+1, len(parts))
		}
		port := u.Port()
		if port == "" {
			port = defaultPort
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("host %d of %d: port out of range", i+1, len(parts))
		}
		hosts = append(hosts, net.JoinHostPort(u.Hostname(), port))
	}
	return hosts, nil
}

// userInfo returns the user and password before the authority's last "@",
// percent-decoded.
func userInfo(authority string) (user, password string, err error) {
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return "", "", nil
	}
	user, password, _ = strings.Cut(authority[:at], ":")
	if user, err = url.PathUnescape(user); err == nil {
		password, err = url.PathUnescape(password)
	}
	if err != nil {
		return "", "", errors.New("the user information is not validly percent-encoded")
	}
	return user, password, nil
}

// tls reports whether any TLS setting of Redis is set.
func (a RedisAuth) tls() bool { return a.CA != "" || a.Cert != "" || a.Key != "" }

// apply sets the user, the password and the TLS files on the client
// options of t, which parseRedisURL read from a URL of scheme.
func (a RedisAuth) apply(t redisTarget, scheme string) error {
	var user, password *string
	var tlsConfig **tls.Config
	switch {
	case t.cluster != nil:
		user, password, tlsConfig = &t.cluster.Username, &t.cluster.Password, &t.cluster.TLSConfig
	case t.failover != nil:
		user, password, tlsConfig = &t.failover.Username, &t.failover.Password, &t.failover.TLSConfig
	default:
		user, password, tlsConfig = &t.single.Username, &t.single.Password, &t.single.TLSConfig
	}
	if a.Username != "" {
		*user = a.Username
	}
	p, err := sensitive.Secret("redis-password", a.Password, a.PasswordFile)
	if err != nil {
		return err
	}
	if p != "" {
		*password = p
	}
	if a.Username != "" && *password == "" {
		return errors.New("redis-username: needs a password, redis-password or the redis-url's")
	}
	if !a.tls() {
		return nil
	}
	if *tlsConfig == nil {
		return fmt.Errorf("redis-ca, redis-cert and redis-key: only with TLS, and redis-url is %s://: use rediss://, rediss+cluster:// or rediss+sentinel://", scheme)
	}
	if a.CA != "" && (*tlsConfig).InsecureSkipVerify {
		return errors.New("redis-ca and skip_verify=true in redis-url: the CA would check nothing; drop skip_verify to verify the servers against it")
	}
	pool, certs, err := sensitive.LoadTLSFiles("redis", a.CA, a.Cert, a.Key)
	if err != nil {
		return err
	}
	c := (*tlsConfig).Clone()
	if pool != nil {
		c.RootCAs = pool
	}
	c.Certificates = certs
	*tlsConfig = c
	return nil
}
