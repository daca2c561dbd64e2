package harness

import (
	"context"
	"sync"
)

// Background is a goroutine that runs until its context ends or Stop.
type Background struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Go runs f in the background with a context of ctx's that Stop cancels.
func Go(ctx context.Context, f func(ctx context.Context)) *Background {
	ctx, cancel := context.WithCancel(ctx)
	b := &Background{cancel: cancel}
	b.wg.Go(func() { f(ctx) })
	return b
}

// Stop cancels the goroutine's context and waits until it returned; a
// second Stop returns at once.
func (b *Background) Stop() {
	b.cancel()
	b.wg.Wait()
}
