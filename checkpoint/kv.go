package checkpoint

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/capoller/capoller/diff"
)

// ErrConflict means another writer committed the shard since it was
// loaded; the cycle must start over.
var ErrConflict = errors.New("checkpoint: concurrent commit")

// KVOptions configures a [KV] store.
type KVOptions struct {
	// Bucket is the key-value bucket; default CAPOLLER_CHECKPOINTS.
	Bucket string
	// Replicas of the bucket: a JetStream cluster keeps each value on this
	// many servers (3 survive the loss of one); default 1. NewKV creates
	// or updates the bucket with it, so an existing bucket is scaled to it.
	Replicas int
	// Logger hears of records skipped while migrating from the first
	// layout; default no-op.
	Logger *zap.Logger
}

// kvSegments is how many values a shard's states are spread over. A
// record's segment is a hash of its field, so a commit rewrites only the
// segments its records fall in. 64 segments keep each value far below the
// server's max_payload (1 MiB by default) up to about two million records
// per shard; 100,000 records are about 40 KB a segment.
const kvSegments = 64

// KV keeps checkpoints in a JetStream key-value bucket. A shard is
//
//	<account>.<source>.<region>.meta     JSON: known
//	<account>.<source>.<region>.s.<n>    states of the records whose field hashes to n, gzipped
//	<account>.<source>.<region>.outbox   the batch being published, until it is committed
//
// A commit is a compare-and-set on the revision of every segment it
// rewrites, so two writers of one shard cannot both win. The store keeps
// the states it loaded and committed in memory: a shard is read from the
// bucket once, then only written, and read again after a conflict. A shard
// of the default account from before accounts ("<source>.<region>…", or
// the first layout, one value "<source>.<region>") is migrated the first
// time it is loaded.
type KV struct {
	kv         jetstream.KeyValue
	log        *zap.Logger
	maxPayload int64 // the server's, when the store was opened

	mu     sync.Mutex
	shards map[diff.Shard]*kvShard
	zips   sync.Pool // *gzip.Writer: each holds about a megabyte of tables
}

// kvShard is the in-memory copy of one shard.
type kvShard struct {
	known    bool
	metaRev  uint64
	segments [kvSegments]map[string]string // field -> state, both encoded
	revs     [kvSegments]uint64
}

// NewKV creates or opens the bucket.
func NewKV(ctx context.Context, js jetstream.JetStream, opts KVOptions) (*KV, error) {
	if opts.Bucket == "" {
		opts.Bucket = "CAPOLLER_CHECKPOINTS"
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: opts.Bucket, Description: "capoller checkpoints", History: 1, Storage: jetstream.FileStorage, Replicas: opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: open key-value bucket %s: %w", opts.Bucket, err)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	return &KV{kv: kv, log: opts.Logger, maxPayload: js.Conn().MaxPayload(), shards: map[diff.Shard]*kvShard{}}, nil
}

func kvKey(s diff.Shard, parts ...string) string {
	return strings.Join(append([]string{diff.AccountOf(s.Account), string(s.Source), s.Region}, parts...), ".")
}

// legacyKVKey names a value of the default account's shard from before
// accounts.
func legacyKVKey(s diff.Shard, parts ...string) string {
	return strings.Join(append([]string{string(s.Source), s.Region}, parts...), ".")
}

func segmentOf(field string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(field))
	return int(h.Sum32() % kvSegments)
}

// shard returns the in-memory copy of a shard, reading it from the bucket
// if this store has not yet (or no longer, after a conflict) got one.
func (k *KV) shard(ctx context.Context, shard diff.Shard) (*kvShard, error) {
	k.mu.Lock()
	s := k.shards[shard]
	k.mu.Unlock()
	if s != nil {
		return s, nil
	}
	s = &kvShard{}
	meta, err := k.kv.Get(ctx, kvKey(shard, "meta"))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		moved, err := k.moveLegacyKeys(ctx, shard)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: migrate %s in key-value: %w", shard, err)
		}
		if moved {
			k.log.Info("moved a checkpoint to the layout with accounts", zap.Stringer("shard", shard))
			return k.shard(ctx, shard)
		}
		if s.known, s.metaRev, err = k.migrate(ctx, shard); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("checkpoint: load %s from key-value: %w", shard, err)
	default:
		var m kvMeta
		if err := json.Unmarshal(meta.Value(), &m); err != nil {
			return nil, fmt.Errorf("checkpoint: load %s: %w: meta: %v", shard, ErrCorrupt, err)
		}
		s.known, s.metaRev = m.Known, meta.Revision()
	}
	for i := range kvSegments {
		s.segments[i] = map[string]string{}
		entry, err := k.kv.Get(ctx, kvKey(shard, "s", strconv.Itoa(i)))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("checkpoint: load %s from key-value: %w", shard, err)
		}
		if s.segments[i], err = decodeSegment(entry.Value()); err != nil {
			return nil, fmt.Errorf("checkpoint: load %s segment %d: %w", shard, i, err)
		}
		s.revs[i] = entry.Revision()
	}
	k.mu.Lock()
	k.shards[shard] = s
	k.mu.Unlock()
	return s, nil
}

type kvMeta struct {
	Known bool `json:"known"`
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
		if _, err := k.kv.Put(ctx, kvKey(shard, p...), entry.Value()); err != nil {
			return false, err
		}
	}
	if _, err := k.kv.Put(ctx, kvKey(shard, "meta"), meta.Value()); err != nil {
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
		if _, err := k.kv.Put(ctx, kvKey(shard, "s", strconv.Itoa(i)), value); err != nil {
			return false, 0, fmt.Errorf("checkpoint: migrate %s: %w", shard, err)
		}
	}
	var metaRev uint64
	if known {
		if metaRev, err = k.kv.Put(ctx, kvKey(shard, "meta"), []byte(`{"known":true}`)); err != nil {
			return false, 0, fmt.Errorf("checkpoint: migrate %s: %w", shard, err)
		}
	}
	if err := k.kv.Delete(ctx, legacyKVKey(shard)); err != nil {
		return false, 0, fmt.Errorf("checkpoint: migrate %s: %w", shard, err)
	}
	return known, metaRev, nil // the caller reads the segments next
}

// forget drops the in-memory copy of a shard: it is read again next time.
func (k *KV) forget(shard diff.Shard) {
	k.mu.Lock()
	delete(k.shards, shard)
	k.mu.Unlock()
}

// MarkKnown records that the shard's first listing was committed whole.
func (k *KV) MarkKnown(ctx context.Context, shard diff.Shard) error {
	s, err := k.shard(ctx, shard)
	if err != nil {
		return err
	}
	value := []byte(`{"known":true}`)
	var rev uint64
	if s.metaRev == 0 {
		rev, err = k.kv.Create(ctx, kvKey(shard, "meta"), value)
	} else {
		rev, err = k.kv.Update(ctx, kvKey(shard, "meta"), value, s.metaRev)
	}
	if err != nil {
		return k.writeError(shard, "mark known", err)
	}
	k.mu.Lock()
	s.known, s.metaRev = true, rev
	k.mu.Unlock()
	return nil
}

// Load returns the states of keys.
func (k *KV) Load(ctx context.Context, shard diff.Shard, keys []diff.Key) (diff.Previous, error) {
	prev := diff.Previous{States: make(map[diff.Key]diff.State, len(keys))}
	s, err := k.shard(ctx, shard)
	if err != nil {
		return prev, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	prev.Known = s.known
	for _, key := range keys {
		f := encodeKey(key)
		v, ok := s.segments[segmentOf(f)][f]
		if !ok {
			continue
		}
		st, err := decodeState(v)
		if err != nil {
			return prev, fmt.Errorf("checkpoint: load %s record %q: %w", shard, f, err)
		}
		prev.States[key] = st
	}
	return prev, nil
}

// Absent returns the states of the shard's records for which seen is
// false.
func (k *KV) Absent(ctx context.Context, shard diff.Shard, seen func(diff.Key) bool) (map[diff.Key]diff.State, error) {
	s, err := k.shard(ctx, shard)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[diff.Key]diff.State{}
	for _, seg := range s.segments {
		for f, v := range seg {
			key, err := decodeKey(f)
			if err != nil {
				return nil, fmt.Errorf("checkpoint: scan %s: %w", shard, err)
			}
			if seen(key) {
				continue
			}
			st, err := decodeState(v)
			if err != nil {
				return nil, fmt.Errorf("checkpoint: load %s record %q: %w", shard, f, err)
			}
			out[key] = st
		}
	}
	return out, nil
}

// outboxChunk bounds one value of a staged batch, well below the
// server's max_payload: a batch of long ids can be larger than one value.
func (k *KV) outboxChunk() int {
	return max(4096, int(k.maxPayload)/2)
}

// Stage stores a batch about to be published (see [Redis.Stage]): its
// encoding in values "<shard>.outbox.<n>", then "<shard>.outbox" naming
// how many, which makes it staged.
func (k *KV) Stage(ctx context.Context, shard diff.Shard, batch diff.Result) error {
	data := encodeBatch(batch)
	size := k.outboxChunk()
	n := 0
	for start := 0; start < len(data) || n == 0; start += size {
		if _, err := k.kv.Put(ctx, kvKey(shard, "outbox", strconv.Itoa(n)), data[start:min(start+size, len(data))]); err != nil {
			return fmt.Errorf("checkpoint: stage a batch of %s in key-value: %w", shard, err)
		}
		n++
	}
	if _, err := k.kv.Put(ctx, kvKey(shard, "outbox"), []byte(strconv.Itoa(n))); err != nil {
		return fmt.Errorf("checkpoint: stage a batch of %s in key-value: %w", shard, err)
	}
	return nil
}

// Staged returns the batch staged and not yet committed, if any.
func (k *KV) Staged(ctx context.Context, shard diff.Shard) (diff.Result, bool, error) {
	entry, err := k.kv.Get(ctx, kvKey(shard, "outbox"))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return diff.Result{}, false, nil
	}
	if err != nil {
		return diff.Result{}, false, fmt.Errorf("checkpoint: read the staged batch of %s from key-value: %w", shard, err)
	}
	n, err := strconv.Atoi(string(entry.Value()))
	if err != nil || n < 1 || n > 1<<16 {
		return diff.Result{}, false, fmt.Errorf("checkpoint: staged batch of %s: %w: %d bytes of header", shard, ErrCorrupt, len(entry.Value()))
	}
	var data []byte
	for i := range n {
		chunk, err := k.kv.Get(ctx, kvKey(shard, "outbox", strconv.Itoa(i)))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return diff.Result{}, false, fmt.Errorf("checkpoint: staged batch of %s: %w: part %d of %d is missing", shard, ErrCorrupt, i, n)
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

// Commit writes the segments the updates fall in, each with a
// compare-and-set on the revision this store last saw, then clears the
// staged batch if it carries transitions (only such a batch is staged).
// Transitions are not kept here: in the embedded mode the
// event stream itself is the history. Should a commit stop half way, the
// staged batch it clears last finishes it on the next cycle.
func (k *KV) Commit(ctx context.Context, shard diff.Shard, updates []diff.Update, transitions []diff.Transition) error {
	s, err := k.shard(ctx, shard)
	if err != nil {
		return err
	}
	changed := map[int]map[string]string{}
	k.mu.Lock()
	for _, u := range updates {
		f := encodeKey(u.Key)
		i := segmentOf(f)
		seg, ok := changed[i]
		if !ok {
			seg = make(map[string]string, len(s.segments[i])+1)
			for kf, v := range s.segments[i] {
				seg[kf] = v
			}
			changed[i] = seg
		}
		if u.Forget {
			delete(seg, f)
		} else {
			seg[f] = encodeState(u.State)
		}
	}
	k.mu.Unlock()
	// The segments are independent values: write them side by side.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, seg := range changed {
		g.Go(func() error {
			value, err := k.encodeSegment(seg)
			if err != nil {
				return fmt.Errorf("checkpoint: encode %s: %w", shard, err)
			}
			key := kvKey(shard, "s", strconv.Itoa(i))
			k.mu.Lock()
			base := s.revs[i]
			k.mu.Unlock()
			var rev uint64
			if base == 0 {
				rev, err = k.kv.Create(gctx, key, value)
			} else {
				rev, err = k.kv.Update(gctx, key, value, base)
			}
			if err != nil {
				return k.writeError(shard, fmt.Sprintf("commit (%d bytes)", len(value)), err)
			}
			k.mu.Lock()
			s.segments[i], s.revs[i] = seg, rev
			k.mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if len(transitions) == 0 {
		return nil // only a batch with events is ever staged
	}
	if err := k.kv.Purge(ctx, kvKey(shard, "outbox")); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("checkpoint: clear the staged batch of %s: %w", shard, err)
	}
	return nil
}

// writeError translates a failed write, forgetting the shard's copy: on a
// conflict another writer moved it, and on any other failure it is no
// longer known what the bucket holds.
func (k *KV) writeError(shard diff.Shard, what string, err error) error {
	k.forget(shard)
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSequence(err) {
		return fmt.Errorf("checkpoint: %s %s: %w", what, shard, ErrConflict)
	}
	return fmt.Errorf("checkpoint: %s %s to key-value: %w", what, shard, err)
}

// isWrongLastSequence recognises a failed compare-and-set on servers and
// clients that predate jetstream.ErrKeyRevisionMismatch (API error 10071).
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// encodeSegment writes the records as a binary sequence (see codec.go),
// gzipped.
func (k *KV) encodeSegment(seg map[string]string) ([]byte, error) {
	var w writer
	for f, v := range seg {
		w.str(f)
		w.str(v)
	}
	var buf bytes.Buffer
	zw, ok := k.zips.Get().(*gzip.Writer)
	if ok {
		zw.Reset(&buf)
	} else {
		zw, _ = gzip.NewWriterLevel(&buf, gzip.BestSpeed) // a valid level: no error
	}
	defer k.zips.Put(zw)
	if _, err := zw.Write(w.b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decodeSegment(value []byte) (map[string]string, error) {
	zr, err := gzip.NewReader(bytes.NewReader(value))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	r := reader{b: raw}
	seg := map[string]string{}
	for r.more() {
		f, v := r.str(), r.str()
		if r.err != nil {
			break
		}
		if _, err := decodeKey(f); err != nil {
			return nil, err
		}
		seg[f] = v
	}
	if r.err != nil {
		return nil, r.err
	}
	return seg, nil
}

// decodeLegacyShard reads the first layout: "field\tstate" lines, gzipped.
func decodeLegacyShard(value []byte) (map[string]string, error) {
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
			continue // the rest of an id that held a newline, which this layout could not store
		}
		all[f] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return all, nil
}
