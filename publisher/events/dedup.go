package events

// DedupOptions configures a [Dedup].
type DedupOptions struct {
	// Window is how many of the latest event ids are remembered; default
	// 100,000. JetStream already drops a re-published event within the
	// stream's duplicate window; a subscriber that reads the stream
	// again, or reads a replay beside it, still sees an event twice.
	Window int
}

// Dedup remembers the latest event ids, to drop an event seen before. Its
// memory is bounded by the window; it is not safe for concurrent use.
type Dedup struct {
	seen  map[string]struct{}
	ring  []string
	next  int
	limit int
}

// NewDedup returns an empty Dedup.
func NewDedup(opts DedupOptions) *Dedup {
	if opts.Window <= 0 {
		opts.Window = 100_000
	}
	return &Dedup{seen: make(map[string]struct{}, min(opts.Window, 1024)), limit: opts.Window}
}

// Seen reports whether id is among the latest ids, and remembers it.
func (d *Dedup) Seen(id string) bool {
	if _, ok := d.seen[id]; ok {
		return true
	}
	if len(d.ring) < d.limit {
		d.ring = append(d.ring, id)
	} else {
		delete(d.seen, d.ring[d.next])
		d.ring[d.next] = id
		d.next = (d.next + 1) % d.limit
	}
	d.seen[id] = struct{}{}
	return false
}
