package checkpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/capoller/capoller/diff"
)

// kvOutbox is the header of a shard's staged batch, value
// "<shard>.outbox". An unfenced store writes what it always wrote: the
// number of chunks, "<n>", of the batch in "<shard>.outbox.<i>". A fenced
// one writes JSON naming its token, a slot and the count, the batch being
// in "<shard>.outbox.<token>.<slot>.<i>"; n 0 is no batch. Keyed by token,
// a stale owner's chunks can never overwrite the new owner's; and a new
// batch goes to the slot the header does not name, so that the staged
// batch is never overwritten before the header moves to its successor
// with a compare-and-set.
type kvOutbox struct {
	Token  uint64 `json:"token"`
	Slot   int    `json:"slot"`
	N      int    `json:"n"`
	legacy bool
}

// maxOutboxChunks bounds a header's count, against a corrupt one.
const maxOutboxChunks = 1 << 16

func parseOutbox(value []byte) (kvOutbox, error) {
	if bytes.HasPrefix(value, []byte("{")) {
		var o kvOutbox
		if err := json.Unmarshal(value, &o); err != nil || o.N < 0 || o.N > maxOutboxChunks || (o.Slot != 0 && o.Slot != 1) {
			return kvOutbox{}, fmt.Errorf("%w: %d bytes of header", ErrCorrupt, len(value))
		}
		return o, nil
	}
	n, err := strconv.Atoi(string(value))
	if err != nil || n < 1 || n > maxOutboxChunks {
		return kvOutbox{}, fmt.Errorf("%w: %d bytes of header", ErrCorrupt, len(value))
	}
	return kvOutbox{N: n, legacy: true}, nil
}

func (o kvOutbox) encode() []byte {
	if o.legacy {
		return []byte(strconv.Itoa(o.N))
	}
	value, _ := json.Marshal(o) // numbers only: no error
	return value
}

// chunk names the value that holds part i of the batch.
func (o kvOutbox) chunk(shard diff.Shard, i int) string {
	if o.legacy {
		return kvKey(shard, "outbox", strconv.Itoa(i))
	}
	return kvKey(shard, "outbox", strconv.FormatUint(o.Token, 10), strconv.Itoa(o.Slot), strconv.Itoa(i))
}

// outbox reads the header of the staged batch; a missing one is no batch,
// with revision 0.
func (k *KV) outbox(ctx context.Context, shard diff.Shard) (kvOutbox, uint64, error) {
	entry, err := k.kv.Get(ctx, kvKey(shard, "outbox"))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return kvOutbox{}, 0, nil
	}
	if err != nil {
		return kvOutbox{}, 0, fmt.Errorf("checkpoint: read the staged batch of %s from key-value: %w", shard, err)
	}
	o, err := parseOutbox(entry.Value())
	if err != nil {
		return kvOutbox{}, 0, fmt.Errorf("checkpoint: staged batch of %s: %w", shard, err)
	}
	return o, entry.Revision(), nil
}

// dropChunks deletes the chunks of a batch no header names any more. It
// is tidying, not correctness (nothing reads them), so a failure is only
// logged.
func (k *KV) dropChunks(ctx context.Context, shard diff.Shard, o kvOutbox) {
	for i := range o.N {
		if err := k.kv.Delete(ctx, o.chunk(shard, i)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			k.log.Debug("could not delete a chunk of a finished staged batch", zap.Stringer("shard", shard), zap.Error(err))
			return
		}
	}
}

// outboxChunk bounds one value of a staged batch, well below the
// server's max_payload: a batch of long ids can be larger than one value.
func (k *KV) outboxChunk() int {
	return max(4096, int(k.maxPayload)/2)
}

// Stage stores a batch about to be published (see [Redis.Stage]): its
// encoding in chunks, then the header naming them (see kvOutbox), which
// makes it staged. Fenced, the header is written with a compare-and-set,
// and the chunks of the batch it replaces are deleted after.
func (k *KV) Stage(ctx context.Context, shard diff.Shard, batch diff.Result) error {
	shard = shard.Canonical()
	k.mu.Lock()
	token := k.fences[shard]
	k.mu.Unlock()
	var s *kvShard
	next := kvOutbox{legacy: true}
	var old kvOutbox
	var base uint64
	if token != 0 {
		var err error
		if s, err = k.shard(ctx, shard); err != nil {
			return err
		}
		k.mu.Lock()
		old, base = s.out, s.outRev
		k.mu.Unlock()
		next = kvOutbox{Token: s.token}
		if !old.legacy && old.Token == s.token {
			next.Slot = 1 - old.Slot
		}
	}
	data := encodeBatch(batch)
	size := k.outboxChunk()
	for start := 0; start < len(data) || next.N == 0; start += size {
		if _, err := k.kv.Put(ctx, next.chunk(shard, next.N), data[start:min(start+size, len(data))]); err != nil {
			return fmt.Errorf("checkpoint: stage a batch of %s in key-value: %w", shard, err)
		}
		next.N++
	}
	if s == nil {
		if _, err := k.kv.Put(ctx, kvKey(shard, "outbox"), next.encode()); err != nil {
			return fmt.Errorf("checkpoint: stage a batch of %s in key-value: %w", shard, err)
		}
		return nil
	}
	var rev uint64
	var err error
	if base == 0 { // no header: an unfenced writer purged the one the takeover wrote
		rev, err = k.kv.Create(ctx, kvKey(shard, "outbox"), next.encode())
	} else {
		rev, err = k.kv.Update(ctx, kvKey(shard, "outbox"), next.encode(), base)
	}
	if err != nil {
		k.dropChunks(ctx, shard, next)
		return k.writeError(ctx, shard, s.token, "stage a batch of", err)
	}
	k.mu.Lock()
	s.out, s.outRev = next, rev
	k.mu.Unlock()
	k.dropChunks(ctx, shard, old)
	return nil
}

// Staged returns the batch staged and not yet committed, if any. Under a
// fence, a batch staged by a newer owner is refused with ErrFenced: a
// stale owner has no business publishing it.
func (k *KV) Staged(ctx context.Context, shard diff.Shard) (diff.Result, bool, error) {
	shard = shard.Canonical()
	o, rev, err := k.outbox(ctx, shard)
	if err != nil || rev == 0 || o.N == 0 {
		return diff.Result{}, false, err
	}
	k.mu.Lock()
	token := k.fences[shard]
	k.mu.Unlock()
	if token != 0 && o.Token > token {
		return diff.Result{}, false, fencedError("read the staged batch of", shard, o.Token, token)
	}
	var data []byte
	for i := range o.N {
		chunk, err := k.kv.Get(ctx, o.chunk(shard, i))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return diff.Result{}, false, fmt.Errorf("checkpoint: staged batch of %s: %w: part %d of %d is missing", shard, ErrCorrupt, i, o.N)
		}
		if err != nil {
			return diff.Result{}, false, fmt.Errorf("checkpoint: read the staged batch of %s from key-value: %w", shard, err)
		}
		data = append(data, chunk.Value()...)
	}
	batch, err := decodeBatch(data)
	if err != nil {
		return diff.Result{}, false, fmt.Errorf("checkpoint: staged batch of %s: %w", shard, err)
	}
	return ofShard(batch, shard), true, nil
}
