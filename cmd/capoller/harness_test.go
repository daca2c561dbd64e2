package main

import "github.com/capoller/capoller/cmd/internal/harness"

// freePort is harness.FreePort under the name engineauth_test.go calls:
// that file moves out of this package with the engines' code, in a change
// of its own.
func freePort() (int, error) { return harness.FreePort() }
