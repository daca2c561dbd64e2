package checkpoint

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/diff"
)

// ErrConflict means another writer committed the shard since it was
// loaded; the cycle must start over.
var ErrConflict = errors.New("checkpoint: concurrent commit")

// KVOptions configures a [KV] store.
type KVOptions struct {
	// Bucket is the key-value bucket; default CAPOLLER_CHECKPOINTS.
	Bucket string
}

// KV keeps checkpoints in a JetStream key-value bucket, one gzip-compressed
// value per shard (key "<source>.<region>") holding every record's state
// and, once its first listing was committed whole, a "known" marker.
// A commit is a compare-and-set on the revision read by the last Load, so
// two writers of one shard cannot both win. It suits the embedded mode and
// fleets up to tens of thousands of records per shard; the value must fit
// in the server's max_payload (1 MiB by default).
type KV struct {
	kv jetstream.KeyValue

	mu        sync.Mutex
	revisions map[diff.Shard]uint64            // revision each shard was loaded at
	states    map[diff.Shard]map[string]string // full shard state as loaded/committed
}

// NewKV creates or opens the bucket.
func NewKV(ctx context.Context, js jetstream.JetStream, opts KVOptions) (*KV, error) {
	if opts.Bucket == "" {
		opts.Bucket = "CAPOLLER_CHECKPOINTS"
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: opts.Bucket, Description: "capoller checkpoints", History: 1, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: open key-value bucket %s: %w", opts.Bucket, err)
	}
	return &KV{kv: kv, revisions: map[diff.Shard]uint64{}, states: map[diff.Shard]map[string]string{}}, nil
}

func kvKey(s diff.Shard) string { return string(s.Source) + "." + s.Region }

// knownMarker is the field that marks a known shard; no record key starts
// with "!".
const knownMarker = "!known"

// MarkKnown records that the shard's first listing was committed whole.
func (k *KV) MarkKnown(ctx context.Context, shard diff.Shard) error {
	return k.write(ctx, shard, func(all map[string]string) { all[knownMarker] = "1" })
}

// Load reads the shard's value and returns the states of keys.
func (k *KV) Load(ctx context.Context, shard diff.Shard, keys []diff.Key) (diff.Previous, error) {
	prev := diff.Previous{States: make(map[diff.Key]diff.State, len(keys))}
	entry, err := k.kv.Get(ctx, kvKey(shard))
	var all map[string]string
	var rev uint64
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		all = map[string]string{}
	case err != nil:
		return prev, fmt.Errorf("checkpoint: load %s from key-value: %w", shard, err)
	default:
		rev = entry.Revision()
		if all, err = decodeShard(entry.Value()); err != nil {
			return prev, fmt.Errorf("checkpoint: load %s: %w", shard, err)
		}
		_, prev.Known = all[knownMarker]
	}
	for _, key := range keys {
		v, ok := all[field(key)]
		if !ok {
			continue
		}
		st, err := decodeState(v)
		if err != nil {
			return prev, fmt.Errorf("checkpoint: load %s record %s: %w", shard, field(key), err)
		}
		prev.States[key] = st
	}
	k.mu.Lock()
	k.revisions[shard], k.states[shard] = rev, all
	k.mu.Unlock()
	return prev, nil
}

// Absent returns the states of the shard's records for which seen is
// false, as of the last Load.
func (k *KV) Absent(ctx context.Context, shard diff.Shard, seen func(diff.Key) bool) (map[diff.Key]diff.State, error) {
	if _, err := k.Load(ctx, shard, nil); err != nil {
		return nil, err
	}
	k.mu.Lock()
	all := k.states[shard]
	k.mu.Unlock()
	out := map[diff.Key]diff.State{}
	for f, v := range all {
		key := parseField(f)
		if f == knownMarker || seen(key) {
			continue
		}
		st, err := decodeState(v)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: load %s record %s: %w", shard, f, err)
		}
		out[key] = st
	}
	return out, nil
}

// Commit writes the shard's states with the updates applied, if nobody
// else wrote it since Load. Transitions are not kept here: in the embedded
// mode the event stream itself is the history.
func (k *KV) Commit(ctx context.Context, shard diff.Shard, updates []diff.Update, _ []diff.Transition) error {
	return k.write(ctx, shard, func(all map[string]string) {
		for _, u := range updates {
			all[field(u.Key)] = encodeState(u.State)
		}
	})
}

// write applies change to the shard's states as last loaded and stores
// them with a compare-and-set on the loaded revision.
func (k *KV) write(ctx context.Context, shard diff.Shard, change func(map[string]string)) error {
	k.mu.Lock()
	rev, loaded := k.revisions[shard]
	base := k.states[shard]
	k.mu.Unlock()
	if !loaded {
		return fmt.Errorf("checkpoint: commit %s without a load", shard)
	}
	next := make(map[string]string, len(base))
	for f, v := range base {
		next[f] = v
	}
	change(next)
	value, err := encodeShard(next)
	if err != nil {
		return fmt.Errorf("checkpoint: encode %s: %w", shard, err)
	}
	var newRev uint64
	if rev == 0 {
		newRev, err = k.kv.Create(ctx, kvKey(shard), value)
	} else {
		newRev, err = k.kv.Update(ctx, kvKey(shard), value, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSequence(err) {
		return fmt.Errorf("checkpoint: commit %s: %w", shard, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("checkpoint: commit %s to key-value (%d bytes): %w", shard, len(value), err)
	}
	k.mu.Lock()
	k.revisions[shard], k.states[shard] = newRev, next
	k.mu.Unlock()
	return nil
}

// isWrongLastSequence recognises a failed compare-and-set on servers and
// clients that predate jetstream.ErrKeyRevisionMismatch (API error 10071).
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// encodeShard writes one "field\tstate" line per record, gzipped.
func encodeShard(all map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	for f, v := range all {
		if _, err := fmt.Fprintf(zw, "%s\t%s\n", f, v); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decodeShard(value []byte) (map[string]string, error) {
	zr, err := gzip.NewReader(bytes.NewReader(value))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	all := map[string]string{}
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		f, v, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			return nil, fmt.Errorf("%w: line %q", ErrCorrupt, sc.Text())
		}
		all[f] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return all, nil
}
