package main

import (
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/hintintake"
)

// newHintServer builds the hints endpoint of cfg, or nil when hints are
// off.
func newHintServer(cfg config, log *zap.Logger, nc *nats.Conn, shards []diff.Shard, reg prometheus.Registerer) *hintintake.Server {
	if cfg.Hints.Listen == "" {
		return nil
	}
	return hintintake.New(hintintake.Options{Listen: cfg.Hints.Listen, TLSCert: cfg.Hints.TLSCert, TLSKey: cfg.Hints.TLSKey,
		Token: cfg.Hints.Token, TokenFile: cfg.Hints.TokenFile, Accounts: hintAccounts(cfg), Shards: shards,
		SubjectPrefix: cfg.SubjectPrefix, NATS: nc, Wait: 2*cfg.LeaseTTL + 5*time.Second, Logger: log, Registerer: reg})
}

// hintAccounts maps Alibaba Cloud uids to accounts: each account's uid;
// without any, --hints-uid's for the default account; without it, any uid
// for a single account (its pushes can be no other's).
func hintAccounts(cfg config) map[string]string {
	accounts := map[string]string{}
	for _, a := range cfg.Accounts {
		if a.UID != "" {
			accounts[a.UID] = a.Name
		}
	}
	switch {
	case len(accounts) > 0:
	case cfg.Hints.UID != "":
		accounts[cfg.Hints.UID] = diff.DefaultAccount
	case len(cfg.Accounts) <= 1:
		accounts[""] = diff.AccountOf(cfg.accountNames()[0])
	}
	return accounts
}
