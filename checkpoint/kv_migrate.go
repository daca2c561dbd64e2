package checkpoint

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/capoller/capoller/diff"
)

// legacyKVKey names a value of the default account's shard from before
// accounts.
func legacyKVKey(s diff.Shard, parts ...string) string {
	return strings.Join(append([]string{string(s.Source), s.Region}, parts...), ".")
}

// moveLegacyKeys copies the values of a default account's shard from
// before accounts under their current names, meta last (its presence says
// the move is done), then deletes the old ones. It reports whether there
// was anything to move.
func (k *KV) moveLegacyKeys(ctx context.Context, shard diff.Shard) (bool, error) {
	if diff.AccountOf(shard.Account) != diff.DefaultAccount {
		return false, nil
	}
	meta, err := k.kv.Get(ctx, legacyKVKey(shard, "meta"))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	parts := [][]string{{"outbox"}}
	for i := range kvSegments {
		parts = append(parts, []string{"s", strconv.Itoa(i)})
	}
	if staged, err := k.kv.Get(ctx, legacyKVKey(shard, "outbox")); err == nil {
		if n, err := strconv.Atoi(string(staged.Value())); err == nil && n > 0 && n <= 1<<16 {
			for i := range n {
				parts = append(parts, []string{"outbox", strconv.Itoa(i)})
			}
		}
	}
	for _, p := range parts {
		entry, err := k.kv.Get(ctx, legacyKVKey(shard, p...))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		// Create, never Put: a value already there was moved (by an
		// interrupted move, or by a newer owner while this replica was
		// paused here) and may hold newer commits.
		if _, err := k.kv.Create(ctx, kvKey(shard, p...), entry.Value()); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return false, err
		}
	}
	if _, err := k.kv.Create(ctx, kvKey(shard, "meta"), meta.Value()); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return false, err
	}
	for _, p := range append(parts, []string{"meta"}) {
		if err := k.kv.Delete(ctx, legacyKVKey(shard, p...)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, err
		}
	}
	return true, nil
}

// migrate reads a shard of the first layout, if there is one, and writes
// it in the current one. The legacy value is deleted last, so an
// interrupted migration is done again.
// It reports whether the shard was known, and the revision of its meta.
func (k *KV) migrate(ctx context.Context, shard diff.Shard) (bool, uint64, error) {
	if diff.AccountOf(shard.Account) != diff.DefaultAccount {
		return false, 0, nil
	}
	entry, err := k.kv.Get(ctx, legacyKVKey(shard))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("checkpoint: load %s from key-value: %w", shard, err)
	}
	legacy, err := decodeLegacyShard(entry.Value())
	if err != nil {
		return false, 0, fmt.Errorf("checkpoint: migrate %s: %w", shard, err)
	}
	segments := [kvSegments]map[string]string{}
	for i := range segments {
		segments[i] = map[string]string{}
	}
	known := false
	for f, v := range legacy {
		if f == "!known" {
			known = true
			continue
		}
		st, err := decodeLegacyState(v, time.Now().UTC())
		if err != nil { // the first layout could not hold it: let it be new rather than block the shard
			k.log.Warn("skipping an undecodable record of the first layout", zap.Stringer("shard", shard), zap.String("field", f), zap.Error(err))
			continue
		}
		field := encodeKey(decodeLegacyField(f))
		segments[segmentOf(field)][field] = encodeState(st)
	}
	for i, seg := range segments {
		if len(seg) == 0 {
			continue
		}
		value, err := k.encodeSegment(seg)
		if err != nil {
			return false, 0, fmt.Errorf("checkpoint: migrate %s: %w", shard, err)
		}
		// Create, never Put (see moveLegacyKeys).
		if _, err := k.kv.Create(ctx, kvKey(shard, "s", strconv.Itoa(i)), value); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return false, 0, fmt.Errorf("checkpoint: migrate %s: %w", shard, err)
		}
	}
	var metaRev uint64
	if known {
		metaRev, err = k.kv.Create(ctx, kvKey(shard, "meta"), []byte(`{"known":true}`))
		if errors.Is(err, jetstream.ErrKeyExists) { // another writer finished first: theirs stands
			m, rev, err := k.getMeta(ctx, shard)
			return m.Known, rev, err
		}
		if err != nil {
			return false, 0, fmt.Errorf("checkpoint: migrate %s: %w", shard, err)
		}
	}
	if err := k.kv.Delete(ctx, legacyKVKey(shard)); err != nil {
		return false, 0, fmt.Errorf("checkpoint: migrate %s: %w", shard, err)
	}
	return known, metaRev, nil // the caller reads the segments next
}

// decodeLegacyShard reads the first layout: "field\tstate" lines, gzipped.
func decodeLegacyShard(value []byte) (map[string]string, error) {
	zr, err := gzip.NewReader(bytes.NewReader(value))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	all := map[string]string{}
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		f, v, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			continue // the rest of an id that held a newline, which this layout could not store
		}
		all[f] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return all, nil
}
