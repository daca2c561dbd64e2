package checkpoint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/capoller/capoller/diff"
)

// The KV store's history: each commit with transitions writes them, in
// the encoding of a staged batch, as
//
//	<account>.<source>.<region>.h.<batch>.<i>.<n>.<count>   part i of n (n > 1 only for a batch above a value's limit)
//
// where <batch> is a hash of the batch's event ids and <count> its number
// of transitions. It is written after
// the states and before the staged batch is cleared, so a commit that
// stops half way is finished by the next cycle (which finishes the staged
// batch) and writes the same values again: history and states end up
// agreeing, and a batch is never in the history twice. The bucket's
// stream keeps the latest value of each key in the order written, which
// is the order of the commits. At most once an hour per shard, the oldest
// commits are purged while they are older than the age limit or the rest
// still holds the count limit, as in the Redis store.

// historyPart bounds one value of a commit in the history.
const historyPart = 256 << 10

// historyTrimEvery is how often a shard's history is trimmed.
const historyTrimEvery = time.Hour

func batchKey(ts []diff.Transition) string {
	h := sha256.New()
	for _, t := range ts {
		h.Write([]byte(t.ID))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// appendHistory writes a commit's transitions to the shard's history.
func (k *KV) appendHistory(ctx context.Context, shard diff.Shard, ts []diff.Transition) error {
	data := encodeHistory(ts)
	// Parts of a fixed size, whatever the server's max_payload (above
	// 512 KiB): a replica behind another server that finishes the batch
	// again writes the same keys.
	size := min(historyPart, k.outboxChunk())
	n := max(1, (len(data)+size-1)/size)
	k.trimHistory(ctx, shard) // first: what this commit writes is never old
	key := batchKey(ts)
	for i := range n {
		part := data[i*size : min((i+1)*size, len(data))]
		if _, err := k.kv.Put(ctx, kvKey(shard, "h", key, strconv.Itoa(i), strconv.Itoa(n), strconv.Itoa(len(ts))), part); err != nil {
			return fmt.Errorf("checkpoint: write the history of %s in key-value: %w", shard, err)
		}
	}
	return nil
}

// historySubject is the subject, in the bucket's stream, of a shard's
// history values (all shards' with nil).
func (k *KV) historySubject(shard *diff.Shard) string {
	if shard == nil {
		return "$KV." + k.bucket + ".*.*.*.h.>"
	}
	return "$KV." + k.bucket + "." + kvKey(*shard, "h") + ".>"
}

// trimHistory purges the shard's oldest commits while they are older than
// the age limit or the rest still holds the count limit, if it was not
// trimmed within the hour. It is tidying: a failure is logged.
func (k *KV) trimHistory(ctx context.Context, shard diff.Shard) {
	if k.historyMaxAge <= 0 && k.historyMaxLen <= 0 {
		return
	}
	now := time.Now()
	k.mu.Lock()
	due := now.Sub(k.trimmed[shard]) >= historyTrimEvery
	if due {
		k.trimmed[shard] = now
	}
	k.mu.Unlock()
	if !due {
		return
	}
	if err := k.trim(ctx, shard, now); err != nil {
		k.log.Warn("could not trim the history of a shard", zap.Stringer("shard", shard), zap.Error(err))
	}
}

func (k *KV) trim(ctx context.Context, shard diff.Shard, now time.Time) error {
	prefix := "$KV." + k.bucket + "." + kvKey(shard, "h") + "."
	total := int64(0)
	if k.historyMaxLen > 0 {
		info, err := k.stream.Info(ctx, jetstream.WithSubjectFilter(k.historySubject(&shard)))
		if err != nil {
			return err
		}
		for subject := range info.State.Subjects {
			if key, ok := parseHistoryKey(strings.TrimPrefix(subject, prefix)); ok && key.part == 0 {
				total += int64(key.count)
			}
		}
	}
	cutoff := now.Add(-k.historyMaxAge)
	return k.readHistory(ctx, shard, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		key, ok := parseHistoryKey(strings.TrimPrefix(msg.Subject(), prefix))
		if !ok || key.part != 0 {
			return true, nil // its commit goes with part 0
		}
		old := k.historyMaxAge > 0 && meta.Timestamp.Before(cutoff)
		over := k.historyMaxLen > 0 && total-int64(key.count) >= k.historyMaxLen
		if !old && !over {
			return false, nil
		}
		total -= int64(key.count)
		// A purge of the commit's subjects leaves no marker behind (the
		// bucket's stream denies deleting single messages).
		return true, k.stream.Purge(ctx, jetstream.WithPurgeSubject(prefix+key.batch+".>"))
	})
}

// historyKey is a history value's key after the shard's "h.".
type historyKey struct {
	batch              string
	part, parts, count int
}

func parseHistoryKey(rest string) (historyKey, bool) {
	f := strings.Split(rest, ".")
	if len(f) != 4 {
		return historyKey{}, false
	}
	var k historyKey
	var err [3]error
	k.batch = f[0]
	k.part, err[0] = strconv.Atoi(f[1])
	k.parts, err[1] = strconv.Atoi(f[2])
	k.count, err[2] = strconv.Atoi(f[3])
	ok := err[0] == nil && err[1] == nil && err[2] == nil && k.parts >= 1 && k.parts <= maxOutboxChunks && k.part >= 0 && k.part < k.parts && k.count >= 0
	return k, ok
}

// readHistory reads a shard's history values in stream order from
// where occ says, while each returns true, until none is left.
func (k *KV) readHistory(ctx context.Context, shard diff.Shard, occ jetstream.OrderedConsumerConfig, each func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error)) error {
	occ.FilterSubjects = []string{k.historySubject(&shard)}
	cons, err := k.stream.OrderedConsumer(ctx, occ)
	if err != nil {
		return err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			meta, err := msg.Metadata()
			if err != nil {
				return err
			}
			left = meta.NumPending
			if op := msg.Headers().Get("KV-Operation"); op != "" { // a delete or purge marker
				continue
			}
			more, err := each(msg, meta)
			if err != nil || !more {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return err
		}
		if got == 0 {
			return fmt.Errorf("no history value within 5s while %d were pending", left)
		}
	}
	return nil
}

// Commits returns up to count commits of a shard's history, oldest first,
// after the id after ("" from the beginning, a bare Unix millisecond time
// from that time on). Ids are "<ms>-<stream sequence>", ordered as
// Redis's stream ids are.
func (k *KV) Commits(ctx context.Context, shard diff.Shard, after string, count int64) ([]HistoryCommit, error) {
	shard = shard.Canonical()
	occ := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if _, seq, ok := strings.Cut(after, "-"); ok {
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: history position %q of %s: %w", after, shard, err)
		}
		occ.DeliverPolicy, occ.OptStartSeq = jetstream.DeliverByStartSequencePolicy, n+1
	} else if after != "" && after != "0" {
		n, err := strconv.ParseInt(after, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: history position %q of %s: %w", after, shard, err)
		}
		from := time.UnixMilli(n)
		occ.DeliverPolicy, occ.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	}
	prefix := "$KV." + k.bucket + "." + kvKey(shard, "h") + "."
	type partial struct{ parts [][]byte }
	pending := map[string]*partial{}
	var out []HistoryCommit
	err := k.readHistory(ctx, shard, occ, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		key, ok := parseHistoryKey(strings.TrimPrefix(msg.Subject(), prefix))
		if !ok {
			return false, fmt.Errorf("%w: history value %s", ErrCorrupt, msg.Subject())
		}
		p := pending[key.batch]
		if p == nil {
			p = &partial{parts: make([][]byte, key.parts)}
			pending[key.batch] = p
		}
		if len(p.parts) != key.parts {
			return false, fmt.Errorf("%w: history value %s", ErrCorrupt, msg.Subject())
		}
		p.parts[key.part] = slices.Clone(msg.Data())
		for _, part := range p.parts {
			if part == nil {
				return true, nil // more parts to come
			}
		}
		delete(pending, key.batch)
		b, err := decodeBatch(slices.Concat(p.parts...))
		if err != nil {
			return false, fmt.Errorf("checkpoint: %s history value %s: %w", shard, msg.Subject(), err)
		}
		b = ofShard(b, shard)
		out = append(out, HistoryCommit{ID: fmt.Sprintf("%d-%d", meta.Timestamp.UnixMilli(), meta.Sequence.Stream),
			At: meta.Timestamp.UTC(), Transitions: b.Transitions})
		return int64(len(out)) < count, nil
	})
	if err != nil {
		return out, fmt.Errorf("checkpoint: read the history of %s: %w", shard, err)
	}
	return out, nil
}

// HistoryShards lists the shards that have a history in the bucket,
// whether or not a poller runs them still, in the order of their ids.
func (k *KV) HistoryShards(ctx context.Context) ([]diff.Shard, error) {
	info, err := k.stream.Info(ctx, jetstream.WithSubjectFilter(k.historySubject(nil)))
	if err != nil {
		return nil, fmt.Errorf("checkpoint: list the shards with a history: %w", err)
	}
	found := map[diff.Shard]bool{}
	for subject := range info.State.Subjects {
		parts := strings.Split(strings.TrimPrefix(subject, "$KV."+k.bucket+"."), ".")
		if len(parts) >= 4 && parts[3] == "h" {
			found[diff.Shard{Account: parts[0], Source: diff.Source(parts[1]), Region: parts[2]}] = true
		}
	}
	out := make([]diff.Shard, 0, len(found))
	for s := range found {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b diff.Shard) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}
