package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	// the bucket with it; an existing bucket is kept as it is.
	Replicas int
	// OpenOnly opens an existing bucket and never creates one (for
	// readers such as capoller status).
	OpenOnly bool
	// HistoryMaxAge is how long a commit stays in the history; default
	// 30 days (the API's own retention), negative keeps any age.
	HistoryMaxAge time.Duration
	// HistoryMaxLen is how many transitions each shard's history keeps at
	// least, the oldest commits going first; default 1,000,000, negative
	// keeps any number.
	HistoryMaxLen int64
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
//	<account>.<source>.<region>.meta     JSON: known, and the token of the owner that took it over
//	<account>.<source>.<region>.s.<n>    states of the records whose field hashes to n, gzipped
//	<account>.<source>.<region>.outbox   the header of the batch being published (see kvOutbox)
//	<account>.<source>.<region>.lease    JSON: the shard's lease (see lease_kv.go)
//	<account>.<source>.<region>.status   JSON: the owner's last report of the shard
//	<account>.<source>.<region>.h.…      the history: one value per commit (see history_kv.go)
//	group.members                        JSON: replica id -> member
//
// A commit is a compare-and-set on the revision of every segment it
// rewrites, so two writers of one shard cannot both win. The store keeps
// the states it loaded and committed in memory: a shard is read from the
// bucket once, then only written, and read again after a conflict. A shard
// of the default account from before accounts ("<source>.<region>…", or
// the first layout, one value "<source>.<region>") is migrated the first
// time it is loaded.
//
// Fencing ([KV.Fence]) cannot rest on a transaction, for the bucket has
// none across values; it rests on compare-and-set instead. The first
// access after Fence takes the shard over: it writes the token into meta,
// then rewrites every segment (creating the missing ones, empty) and the
// staged batch's header, each with a compare-and-set, so that every
// revision a previous owner holds is stale and every write it tries fails
// from then on; a failed write whose shard has a newer token is
// ErrFenced. Each load ends by reading meta again: if its token is still
// this process's, no newer owner's takeover had begun, so the revisions
// just read are among those it will make stale. A fenced writer stages
// its batches under its own token (see kvOutbox), which a stale owner's
// writes cannot reach.
type KV struct {
	kv            jetstream.KeyValue
	stream        jetstream.Stream // the bucket's, for the history
	bucket        string
	historyMaxAge time.Duration
	historyMaxLen int64
	log           *zap.Logger
	maxPayload    int64    // the server's, when the store was opened
	configs       *configs // the group's configurations' lists, read once each

	mu     sync.Mutex
	shards map[diff.Shard]*kvShard
	fences map[diff.Shard]uint64 // the token this process's writes of a shard carry; absent = unfenced
	owned  map[diff.Shard]uint64 // the token under which this process took a shard over
	// trimmed is when a shard's history was last trimmed by age.
	trimmed map[diff.Shard]time.Time
	zips    sync.Pool // *gzip.Writer: each holds about a megabyte of tables
}

// kvShard is the in-memory copy of one shard.
type kvShard struct {
	known     bool
	metaRev   uint64
	metaToken uint64 // the token meta holds, kept by an unfenced MarkKnown
	// token is the fence this copy was read under (0: unfenced); a copy
	// read under another is not used.
	token    uint64
	segments [kvSegments]map[string]string // field -> state, both encoded
	revs     [kvSegments]uint64
	// out and outRev are the staged batch's header as a fenced copy last
	// read or wrote it (unfenced copies do not keep it).
	out    kvOutbox
	outRev uint64
}

// NewKV creates or opens the bucket.
func NewKV(ctx context.Context, js jetstream.JetStream, opts KVOptions) (*KV, error) {
	if opts.Bucket == "" {
		opts.Bucket = "CAPOLLER_CHECKPOINTS"
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	// An existing bucket is used as it is: updating it to this
	// configuration would, among others, scale an R3 bucket down to R1.
	kv, err := js.KeyValue(ctx, opts.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && !opts.OpenOnly {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: opts.Bucket, Description: "capoller checkpoints", History: 1, Storage: jetstream.FileStorage, Replicas: opts.Replicas,
		})
		if errors.Is(err, jetstream.ErrBucketExists) { // another replica created it first
			kv, err = js.KeyValue(ctx, opts.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint: open key-value bucket %s: %w", opts.Bucket, err)
	}
	if st, err := kv.Status(ctx); err == nil && opts.Replicas > 0 {
		if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo().Config.Replicas != opts.Replicas {
			opts.Logger.Warn("the existing checkpoint bucket has another replica count than configured; it is kept as it is",
				zap.String("bucket", opts.Bucket), zap.Int("replicas", bs.StreamInfo().Config.Replicas), zap.Int("configured", opts.Replicas))
		}
	}
	stream, err := js.Stream(ctx, "KV_"+opts.Bucket)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: open the stream of key-value bucket %s: %w", opts.Bucket, err)
	}
	if opts.HistoryMaxAge == 0 {
		opts.HistoryMaxAge = 30 * 24 * time.Hour
	}
	if opts.HistoryMaxLen == 0 {
		opts.HistoryMaxLen = 1_000_000
	}
	return &KV{kv: kv, stream: stream, configs: newConfigs(), bucket: opts.Bucket, historyMaxAge: opts.HistoryMaxAge, historyMaxLen: opts.HistoryMaxLen, log: opts.Logger, maxPayload: js.Conn().MaxPayload(),
		shards: map[diff.Shard]*kvShard{}, fences: map[diff.Shard]uint64{}, owned: map[diff.Shard]uint64{}, trimmed: map[diff.Shard]time.Time{}}, nil
}

// Ping says whether the bucket answers.
func (k *KV) Ping(ctx context.Context) error {
	if _, err := k.kv.Status(ctx); err != nil {
		return fmt.Errorf("checkpoint: key-value bucket %s: %w", k.bucket, err)
	}
	return nil
}

func kvKey(s diff.Shard, parts ...string) string {
	return strings.Join(append([]string{diff.AccountOf(s.Account), string(s.Source), s.Region}, parts...), ".")
}

// shard returns the in-memory copy of a shard, reading it from the bucket
// if this store has not yet (or no longer, after a conflict) got one, and
// taking the shard over first if it was fenced with a token this process
// has not taken it over with.
func (k *KV) shard(ctx context.Context, shard diff.Shard) (*kvShard, error) {
	k.mu.Lock()
	s, token, owned := k.shards[shard], k.fences[shard], k.owned[shard]
	k.mu.Unlock()
	if s != nil && s.token == token {
		return s, nil
	}
	var err error
	again := token != 0 && owned != token
	if !again {
		s, again, err = k.load(ctx, shard, token)
	}
	if again && err == nil {
		s, err = k.takeOver(ctx, shard, token)
	}
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	if k.fences[shard] == token { // else Fence was called meanwhile: this copy is stale already
		k.shards[shard] = s
		if token != 0 {
			k.owned[shard] = token
		}
	}
	k.mu.Unlock()
	return s, nil
}

// load reads a shard from the bucket. Under a fence it also reads the
// staged batch's header, and ends by reading meta again (see [KV]); it
// reports whether meta holds an older token than the fence's (an unfenced
// writer of an older version rewrote it), when the shard must be taken
// over again.
func (k *KV) load(ctx context.Context, shard diff.Shard, token uint64) (*kvShard, bool, error) {
	m, metaRev, err := k.meta(ctx, shard)
	if err != nil {
		return nil, false, err
	}
	if token != 0 && m.Token > token {
		return nil, false, fencedError("load", shard, m.Token, token)
	}
	if token != 0 && m.Token < token {
		return nil, true, nil
	}
	s := &kvShard{known: m.Known, metaRev: metaRev, metaToken: m.Token, token: token}
	for i := range kvSegments {
		s.segments[i] = map[string]string{}
		entry, err := k.kv.Get(ctx, kvKey(shard, "s", strconv.Itoa(i)))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("checkpoint: load %s from key-value: %w", shard, err)
		}
		if s.segments[i], err = decodeSegment(entry.Value()); err != nil {
			return nil, false, fmt.Errorf("checkpoint: load %s segment %d: %w", shard, i, err)
		}
		s.revs[i] = entry.Revision()
	}
	if token == 0 {
		return s, false, nil
	}
	if s.out, s.outRev, err = k.outbox(ctx, shard); err != nil {
		return nil, false, err
	}
	again, _, err := k.getMeta(ctx, shard)
	switch {
	case err != nil:
		return nil, false, err
	case again.Token > token:
		return nil, false, fencedError("load", shard, again.Token, token)
	}
	return s, again.Token < token, nil
}

// meta returns a shard's meta and its revision (0: none), moving or
// migrating the shard from an older layout first if it has none.
func (k *KV) meta(ctx context.Context, shard diff.Shard) (kvMeta, uint64, error) {
	m, rev, err := k.getMeta(ctx, shard)
	if err != nil || rev != 0 {
		return m, rev, err
	}
	moved, err := k.moveLegacyKeys(ctx, shard)
	if err != nil {
		return kvMeta{}, 0, fmt.Errorf("checkpoint: migrate %s in key-value: %w", shard, err)
	}
	if moved {
		k.log.Info("moved a checkpoint to the layout with accounts", zap.Stringer("shard", shard))
		return k.meta(ctx, shard)
	}
	known, rev, err := k.migrate(ctx, shard)
	return kvMeta{Known: known}, rev, err
}

// getMeta reads a shard's meta as it is: revision 0 when there is none.
func (k *KV) getMeta(ctx context.Context, shard diff.Shard) (kvMeta, uint64, error) {
	entry, err := k.kv.Get(ctx, kvKey(shard, "meta"))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return kvMeta{}, 0, nil
	}
	if err != nil {
		return kvMeta{}, 0, fmt.Errorf("checkpoint: load %s from key-value: %w", shard, err)
	}
	var m kvMeta
	if err := json.Unmarshal(entry.Value(), &m); err != nil {
		return kvMeta{}, 0, fmt.Errorf("checkpoint: load %s: %w: meta: %w", shard, ErrCorrupt, err)
	}
	return m, entry.Revision(), nil
}

// kvMeta is a shard's meta. Token is omitted when 0, so an unfenced
// store writes what it always wrote.
type kvMeta struct {
	Known bool   `json:"known"`
	Token uint64 `json:"token,omitempty"`
}

// takeOver makes the shard this fenced process's (see [KV]): meta gets
// its token, then every segment and the staged batch's header are
// rewritten with a compare-and-set, re-read whenever another writer got
// in between, so that every revision an older owner holds is stale. It
// returns the copy the rewrites read, and is refused with ErrFenced if
// the lease or meta already has a newer token, or gets one before it is
// done.
func (k *KV) takeOver(ctx context.Context, shard diff.Shard, token uint64) (*kvShard, error) {
	if newer, err := k.leaseToken(ctx, shard); err != nil {
		return nil, err
	} else if newer > token {
		return nil, fencedError("take over", shard, newer, token)
	}
	m, rev, err := k.meta(ctx, shard)
	for err == nil {
		if m.Token > token {
			return nil, fencedError("take over", shard, m.Token, token)
		}
		m.Token = token
		value, _ := json.Marshal(m) // a struct of a bool and a number: no error
		var next uint64
		if rev == 0 {
			next, err = k.kv.Create(ctx, kvKey(shard, "meta"), value)
		} else {
			next, err = k.kv.Update(ctx, kvKey(shard, "meta"), value, rev)
		}
		if err == nil {
			rev = next
			break
		}
		if !isCASFailure(err) {
			return nil, fmt.Errorf("checkpoint: take %s over in key-value: %w", shard, err)
		}
		m, rev, err = k.getMeta(ctx, shard)
	}
	if err != nil {
		return nil, err
	}
	s := &kvShard{known: m.Known, metaRev: rev, metaToken: token, token: token}
	empty, err := k.encodeSegment(nil)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: take %s over: %w", shard, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range kvSegments {
		g.Go(func() error {
			value, rev, err := k.rewrite(gctx, kvKey(shard, "s", strconv.Itoa(i)), empty)
			if err != nil {
				return fmt.Errorf("checkpoint: take %s over in key-value: %w", shard, err)
			}
			seg, err := decodeSegment(value)
			if err != nil {
				return fmt.Errorf("checkpoint: load %s segment %d: %w", shard, i, err)
			}
			s.segments[i], s.revs[i] = seg, rev // each goroutine its own index; g.Wait orders them before any read
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	value, outRev, err := k.rewrite(ctx, kvKey(shard, "outbox"), kvOutbox{Token: token}.encode())
	if err != nil {
		return nil, fmt.Errorf("checkpoint: take %s over in key-value: %w", shard, err)
	}
	if s.out, err = parseOutbox(value); err != nil {
		return nil, fmt.Errorf("checkpoint: staged batch of %s: %w", shard, err)
	}
	s.outRev = outRev
	// A newer owner that began its takeover before these rewrites read the
	// values could have had its own rewrites overtaken by them.
	if again, _, err := k.getMeta(ctx, shard); err != nil {
		return nil, err
	} else if again.Token != token {
		return nil, fencedError("take over", shard, again.Token, token)
	}
	return s, nil
}

// rewrite writes a value again as it is, with a compare-and-set on the
// revision it read (creating it as empty if there is none), until no
// other writer gets in between; it returns the value and its new
// revision. Every writer that read the value before holds a stale
// revision from then on.
func (k *KV) rewrite(ctx context.Context, key string, empty []byte) ([]byte, uint64, error) {
	for ctx.Err() == nil {
		entry, err := k.kv.Get(ctx, key)
		var value []byte
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			value = empty
			rev, err = k.kv.Create(ctx, key, value)
		case err != nil:
			return nil, 0, err
		default:
			value = entry.Value()
			rev, err = k.kv.Update(ctx, key, value, entry.Revision())
		}
		if err == nil {
			return value, rev, nil
		}
		if !isCASFailure(err) {
			return nil, 0, err
		}
	}
	return nil, 0, ctx.Err()
}

// Fence makes this process's later commits, staged batches and known
// marks of shard carry token, and be refused with [ErrFenced] once a
// newer owner took the shard over. It drops the shard's in-memory copy:
// the next access takes the shard over (see [KV]). Token 0 writes
// unfenced.
func (k *KV) Fence(shard diff.Shard, token uint64) {
	shard = shard.Canonical()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fences[shard] == token {
		return
	}
	if token == 0 {
		delete(k.fences, shard)
	} else {
		k.fences[shard] = token
	}
	delete(k.shards, shard)
	delete(k.owned, shard)
}

// fencedError is the refusal of a write by token of a shard whose newer
// owner has token newer.
func fencedError(what string, shard diff.Shard, newer, token uint64) error {
	return fmt.Errorf("checkpoint: %s %s: %w (token %d, this process's %d)", what, shard, ErrFenced, newer, token)
}

// forget drops the in-memory copy of a shard: it is read again next time.
func (k *KV) forget(shard diff.Shard) {
	k.mu.Lock()
	delete(k.shards, shard)
	k.mu.Unlock()
}

// MarkKnown records that the shard's first listing was committed whole.
// Meta keeps its token: it is what tells a stale owner that it is one.
func (k *KV) MarkKnown(ctx context.Context, shard diff.Shard) error {
	shard = shard.Canonical()
	s, err := k.shard(ctx, shard)
	if err != nil {
		return err
	}
	k.mu.Lock()
	value, _ := json.Marshal(kvMeta{Known: true, Token: s.metaToken}) // a bool and a number: no error
	base := s.metaRev
	k.mu.Unlock()
	var rev uint64
	if base == 0 {
		rev, err = k.kv.Create(ctx, kvKey(shard, "meta"), value)
	} else {
		rev, err = k.kv.Update(ctx, kvKey(shard, "meta"), value, base)
	}
	if err != nil {
		return k.writeError(ctx, shard, s.token, "mark known", err)
	}
	k.mu.Lock()
	s.known, s.metaRev = true, rev
	k.mu.Unlock()
	return nil
}

// Load returns the states of keys.
func (k *KV) Load(ctx context.Context, shard diff.Shard, keys []diff.Key) (diff.Previous, error) {
	shard = shard.Canonical()
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
	shard = shard.Canonical()
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

// Commit writes the segments the updates fall in, each with a
// compare-and-set on the revision this store last saw, then clears the
// staged batch if it carries transitions (only such a batch is staged),
// having written them to the history first (see history_kv.go). Should a
// commit stop half way, the staged batch it clears last finishes it on
// the next cycle. Fenced, the
// header is cleared with a compare-and-set, not purged, so that a stale
// owner's clear fails too.
func (k *KV) Commit(ctx context.Context, shard diff.Shard, updates []diff.Update, transitions []diff.Transition) error {
	shard = shard.Canonical()
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
				return k.writeError(ctx, shard, s.token, fmt.Sprintf("commit (%d bytes)", len(value)), err)
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
	if len(transitions) > 0 {
		if err := k.appendHistory(ctx, shard, transitions); err != nil {
			return err
		}
	}
	if s.token == 0 {
		if len(transitions) == 0 {
			return nil // only a batch with events is ever staged
		}
		if err := k.kv.Purge(ctx, kvKey(shard, "outbox")); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("checkpoint: clear the staged batch of %s: %w", shard, err)
		}
		return nil
	}
	k.mu.Lock()
	old, base := s.out, s.outRev
	k.mu.Unlock()
	if len(transitions) == 0 || old.N == 0 {
		if len(changed) > 0 {
			return nil // the segments' compare-and-set proved the shard still this process's
		}
		// Nothing was written, so nothing proved it: a stale owner must not
		// believe its commit made.
		m, _, err := k.getMeta(ctx, shard)
		if err != nil {
			return err
		}
		if m.Token > s.token {
			k.forget(shard)
			return fencedError("commit", shard, m.Token, s.token)
		}
		return nil
	}
	cleared := kvOutbox{Token: s.token}
	if !old.legacy && old.Token == s.token {
		cleared.Slot = old.Slot
	}
	rev, err := k.kv.Update(ctx, kvKey(shard, "outbox"), cleared.encode(), base)
	if err != nil {
		return k.writeError(ctx, shard, s.token, "clear the staged batch of", err)
	}
	k.mu.Lock()
	s.out, s.outRev = cleared, rev
	k.mu.Unlock()
	k.dropChunks(ctx, shard, old)
	return nil
}

// writeError translates a failed write, forgetting the shard's copy: on a
// conflict another writer moved it, and on any other failure it is no
// longer known what the bucket holds.
//
// A failed compare-and-set by a fenced writer is ErrFenced when meta or
// the lease has a newer token than its own: a newer owner took the shard
// over. Otherwise it is ErrConflict.
func (k *KV) writeError(ctx context.Context, shard diff.Shard, token uint64, what string, err error) error {
	k.forget(shard)
	if !isCASFailure(err) {
		return fmt.Errorf("checkpoint: %s %s to key-value: %w", what, shard, err)
	}
	if token != 0 {
		if newer := k.newerToken(ctx, shard, token); newer != 0 {
			return fencedError(what, shard, newer, token)
		}
	}
	return fmt.Errorf("checkpoint: %s %s: %w", what, shard, ErrConflict)
}

// newerToken returns the token in the shard's meta or lease if it is
// newer than token, else 0. A read that fails counts as not newer: the
// caller's write failed all the same, as a conflict.
func (k *KV) newerToken(ctx context.Context, shard diff.Shard, token uint64) uint64 {
	if m, _, err := k.getMeta(ctx, shard); err == nil && m.Token > token {
		return m.Token
	}
	if t, err := k.leaseToken(ctx, shard); err == nil && t > token {
		return t
	}
	return 0
}

// isCASFailure recognises a compare-and-set that lost: Create of a value
// that exists, Update of a revision that is not the last.
func isCASFailure(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLastSequence(err)
}

// isWrongLastSequence recognises a failed compare-and-set on servers and
// clients that predate jetstream.ErrKeyRevisionMismatch (API error 10071).
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
