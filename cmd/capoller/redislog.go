package main

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/capoller/capoller/poller/sensitive"
)

// redisLogger routes go-redis's own messages (a pool that cannot dial,
// say) through zap, so that every line of the log is structured. A message
// repeated as it was is logged once, until another comes. go-redis takes
// its logger process-wide (redis.SetLogger): the daemon sets it once at
// start.
type redisLogger struct {
	log  *zap.Logger
	mu   sync.Mutex
	last string
}

func (l *redisLogger) Printf(_ context.Context, format string, v ...any) {
	msg := sensitive.RedactMessage(strings.TrimSpace(fmt.Sprintf(format, v...)))
	l.mu.Lock()
	repeated := msg == l.last
	l.last = msg
	l.mu.Unlock()
	if !repeated {
		l.log.Warn("redis client", zap.String("message", msg))
	}
}

// droppedRedisLog silences go-redis where no log takes its messages: a
// command reports the failure its call met, once, in its own words.
type droppedRedisLog struct{}

func (droppedRedisLog) Printf(context.Context, string, ...any) {}
