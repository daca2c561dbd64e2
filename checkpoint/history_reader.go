package checkpoint

import (
	"cmp"
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/capoller/capoller/diff"
)

// HistorySource is a store whose audit history can be read: [Redis] and
// [KV] are.
type HistorySource interface {
	// HistoryShards lists the shards that have a history.
	HistoryShards(ctx context.Context) ([]diff.Shard, error)
	// Commits returns up to count commits of a shard's history, oldest
	// first, after the history id after ("" or "0": from the beginning; a
	// bare Unix millisecond time: from that time on).
	Commits(ctx context.Context, shard diff.Shard, after string, count int64) ([]HistoryCommit, error)
}

// HistoryReader reads the audit history of several shards as one: each
// shard's commits in the order they were committed (and so published),
// and the shards merged by the time of their commits. It holds a few
// commits per shard at a time, however long the histories.
type HistoryReader struct {
	src     HistorySource
	cursors []*historyCursor
}

// ReadHistory returns a reader of the shards' histories, from the commits
// made at since on (the zero time: from the beginning). A commit's time
// is the store's clock: read from a little before the first observation
// that matters.
func ReadHistory(src HistorySource, shards []diff.Shard, since time.Time) *HistoryReader {
	after := ""
	if !since.IsZero() {
		after = strconv.FormatInt(since.UnixMilli(), 10)
	}
	r := &HistoryReader{src: src}
	for _, s := range shards {
		r.cursors = append(r.cursors, &historyCursor{shard: s, after: after, pageSize: historyPage(len(shards))})
	}
	return r
}

// Next returns the next commit, and false once every history was read.
func (r *HistoryReader) Next(ctx context.Context) (HistoryCommit, bool, error) {
	var next *historyCursor
	var head *HistoryCommit
	for _, c := range r.cursors {
		hd, err := c.head(ctx, r.src)
		if err != nil {
			return HistoryCommit{}, false, err
		}
		if hd != nil && (head == nil || CompareHistoryIDs(hd.ID, head.ID) < 0) {
			next, head = c, hd
		}
	}
	if next == nil {
		return HistoryCommit{}, false, nil
	}
	out := *head
	next.page[0] = HistoryCommit{} // the reader lets its transitions go
	next.page = next.page[1:]
	return out, true, nil
}

// CompareHistoryIDs orders history ids, "<ms>-<seq>" as Redis streams
// number their entries (the KV store's history uses the same form).
func CompareHistoryIDs(a, b string) int {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	num := func(s string) uint64 { n, _ := strconv.ParseUint(s, 10, 64); return n }
	return cmp.Or(cmp.Compare(num(am), num(bm)), cmp.Compare(num(as), num(bs)))
}

// historyCursor reads one shard's history a page at a time.
type historyCursor struct {
	shard diff.Shard
	after string
	page  []HistoryCommit
	done  bool
	// pageSize is how many commits a read asks for.
	pageSize int64
}

// historyPage is how many commits a cursor reads at once: together the
// cursors hold about 64 commits (64,000 transitions at most, with Redis's
// batches of 1000), and at least one each, the head of the merge.
func historyPage(shards int) int64 { return int64(min(8, max(1, 64/max(shards, 1)))) }

func (c *historyCursor) head(ctx context.Context, src HistorySource) (*HistoryCommit, error) {
	if len(c.page) == 0 && !c.done {
		page, err := src.Commits(ctx, c.shard, c.after, c.pageSize)
		if err != nil {
			return nil, err
		}
		c.page, c.done = page, int64(len(page)) < c.pageSize
		if len(page) > 0 {
			c.after = page[len(page)-1].ID
		}
	}
	if len(c.page) == 0 {
		return nil, nil
	}
	return &c.page[0], nil
}
