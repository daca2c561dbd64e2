package checkpoint

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// MayComeBack reports whether a failure to reach Redis can end without
// anyone changing anything: the server refused the connection or did not
// answer (it is starting, restarting or failing over), its name does not
// resolve yet (a Service not yet created), or it answered that it is
// loading, has no master, or is reconfiguring its cluster. Start-up waits
// for those. Every other answer is a fact about the configuration (wrong
// credentials, an ACL refusal, a database index out of range, a TLS
// failure), which waiting will not change: start-up stops at once,
// naming it.
func MayComeBack(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	if _, ok := errors.AsType[*net.DNSError](err); ok {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// The server's own "try again later" answers.
	msg := err.Error()
	for _, prefix := range []string{"LOADING ", "MASTERDOWN ", "TRYAGAIN ", "CLUSTERDOWN ", "BUSY ", "READONLY "} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	// go-redis's own words for "no server could be dialled": its pool
	// wraps the dial error, which the checks above have seen; a Sentinel
	// that knows no master yet is a failover in progress.
	return strings.Contains(msg, "redis: all sentinels specified in configuration are unreachable") ||
		strings.Contains(msg, "redis: connection pool timeout")
}
