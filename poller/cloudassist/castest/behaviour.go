package castest

import (
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// The listing orders a [Behaviour] can ask for.
const (
	OrderNewest = "newest" // newest first, as the emulator always did ("" means the same)
	OrderOldest = "oldest" // oldest first
)

// Behaviour is how the emulator behaves where the API documents are silent.
// Its zero value is the ideal API the emulator always served: listings
// strictly newest first with no ties, NextTokens that are exact cursors and
// never expire, and any status filter value accepted.
//
// It applies to every paged listing: ECS DescribeInvocations and
// DescribeInvocationResults (NextToken or PageNumber) and, where it means
// something, SWAS DescribeCommandInvocations (Order, Ties and Unstable; its
// page numbers drift by nature). A look-up by InvokeId stays exact: it is
// neither reordered nor drifts, though its tokens still expire. The ground
// truth (/_casim/truth) is not affected.
type Behaviour struct {
	// Order of listings: "" or "newest" (newest first), "oldest" (oldest
	// first).
	Order string `json:"order,omitempty"`
	// Ties: CreationTime has one-second precision, and invocations created
	// in the same second are listed in any order within that second. The
	// order is shuffled from a seed of the server's, so repeated calls
	// agree, unless Unstable.
	Ties bool `json:"ties,omitempty"`
	// Unstable: the order within one second changes between two identical
	// calls (it implies Ties). A NextToken cursor that ends inside a second
	// may then skip or repeat records of that second.
	Unstable bool `json:"unstable,omitempty"`
	// Drift: a NextToken is an offset into the current result, not a
	// cursor. When the underlying set changes between pages (arrivals,
	// status changes under a status filter, expiry), later pages skip or
	// repeat records.
	Drift bool `json:"drift,omitempty"`
	// TokenTTL: a NextToken older than this is refused with
	// InvalidParameter.NextToken (HTTP 400); 0 never.
	TokenTTL Duration `json:"tokenTTL,omitempty"`
	// TokenExpiresOnChange: a NextToken is refused with
	// InvalidParameter.NextToken once the data it pages through changed (a
	// record arrived, left, expired or changed status).
	TokenExpiresOnChange bool `json:"tokenExpiresOnChange,omitempty"`
	// StrictFilters: status filter values the documents do not list are
	// refused with HTTP 400 InvalidParameter.<filter> (see strictStatuses).
	StrictFilters bool `json:"strictFilters,omitempty"`
}

// Validate reports whether b is a behaviour the emulator can take on.
func (b Behaviour) Validate() error {
	switch b.Order {
	case "", OrderNewest, OrderOldest:
	default:
		return fmt.Errorf("castest: unknown order %q (want %q or %q)", b.Order, OrderNewest, OrderOldest)
	}
	if b.TokenTTL < 0 {
		return fmt.Errorf("castest: token TTL must not be negative, got %s", b.TokenTTL)
	}
	return nil
}

// String names what b changes, e.g. "order=oldest ties drift tokenTTL=5s";
// the zero Behaviour is "ideal".
func (b Behaviour) String() string {
	var parts []string
	if b.Order != "" && b.Order != OrderNewest {
		parts = append(parts, "order="+b.Order)
	}
	for _, f := range []struct {
		on   bool
		name string
	}{{b.Ties, "ties"}, {b.Unstable, "unstable"}, {b.Drift, "drift"}} {
		if f.on {
			parts = append(parts, f.name)
		}
	}
	if b.TokenTTL > 0 {
		parts = append(parts, "tokenTTL="+b.TokenTTL.String())
	}
	if b.TokenExpiresOnChange {
		parts = append(parts, "tokenExpiresOnChange")
	}
	if b.StrictFilters {
		parts = append(parts, "strictFilters")
	}
	if len(parts) == 0 {
		return "ideal"
	}
	return strings.Join(parts, " ")
}

// RandomBehaviour picks a mix of every behaviour from seed: the same seed
// always gives the same mix, so a test that logs its seed can be replayed.
func RandomBehaviour(seed int64) Behaviour {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x63617369_6d626876)) // "casimbhv"
	b := Behaviour{
		Ties:                 rng.IntN(2) == 0,
		Unstable:             rng.IntN(3) == 0,
		Drift:                rng.IntN(2) == 0,
		TokenExpiresOnChange: rng.IntN(4) == 0,
		StrictFilters:        rng.IntN(2) == 0,
	}
	if rng.IntN(2) == 0 {
		b.Order = OrderOldest
	}
	ttls := []time.Duration{0, 0, time.Second, 5 * time.Second, 30 * time.Second}
	b.TokenTTL = Duration(ttls[rng.IntN(len(ttls))])
	return b
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("5s", "1m30s"); a JSON number is read as nanoseconds.
type Duration time.Duration

// String formats d as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("duration %s: want a string such as \"5s\"", b)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// behaviourState is a server's current behaviour and its tie seed.
type behaviourState struct {
	mu      sync.Mutex
	b       Behaviour
	tieSeed uint64 // the order of ties within a second, fixed per server
}

func newBehaviourState(b Behaviour) *behaviourState {
	return &behaviourState{b: b, tieSeed: rand.Uint64()}
}

// SetBehaviour replaces the emulator's behaviour. Listings under way carry
// on under the new one; their tokens stay valid where it allows.
func (s *Server) SetBehaviour(b Behaviour) error {
	if err := b.Validate(); err != nil {
		return err
	}
	s.bhv.mu.Lock()
	defer s.bhv.mu.Unlock()
	s.bhv.b = b
	return nil
}

// Behaviour returns the emulator's current behaviour.
func (s *Server) Behaviour() Behaviour {
	s.bhv.mu.Lock()
	defer s.bhv.mu.Unlock()
	return s.bhv.b
}

// controlBehaviour serves GET and POST /_casim/behaviour.
func (s *Server) controlBehaviour(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.Behaviour())
	case http.MethodPost:
		var b Behaviour
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&b); err != nil {
			controlError(w, http.StatusBadRequest, "decode body: "+err.Error())
			return
		}
		if err := s.SetBehaviour(b); err != nil {
			controlError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, s.Behaviour())
	default:
		controlError(w, http.StatusMethodNotAllowed, "behaviour takes GET or POST, not "+r.Method)
	}
}

// strictStatuses are the status filter values the documents list, per
// action and filter; under StrictFilters any other value is refused.
//
//   - DescribeInvocations InvokeStatus: seed 000 (Running, Finished,
//     Failed, PartialFailed, Stopped).
//   - DescribeInvocationResults InvokeRecordStatus: seed 002 (Running,
//     Finished, Success, Failed, PartialFailed, Stopped, Stopping).
//   - SWAS DescribeCommandInvocations InvocationStatus: seed 003 (Pending,
//     Running, Success, Failed, Stopping, Stopped, PartialFailed).
func strictStatuses(filter string) []string {
	switch filter {
	case "InvokeStatus":
		return []string{"Running", "Finished", "Failed", "PartialFailed", "Stopped"}
	case "InvokeRecordStatus":
		return []string{"Running", "Finished", "Success", "Failed", "PartialFailed", "Stopped", "Stopping"}
	case "InvocationStatus":
		return []string{"Pending", "Running", "Success", "Failed", "Stopping", "Stopped", "PartialFailed"}
	}
	return nil
}

// checkFilter refuses, under StrictFilters, a status filter value that the
// documents do not list. No seed documents the error for such a value; the
// code and message follow the pattern of seed 002's error table, where an
// invalid parameter value is HTTP 400 InvalidParameter.<Name>, "The
// specified parameter <Name> is not valid." (InvalidParameter.NextToken,
// InvalidParameter.MaxResults). Case is not held against a documented value.
func (a arrangement) checkFilter(filter, value string) *apiError {
	if !a.b.StrictFilters || value == "" {
		return nil
	}
	if slices.ContainsFunc(strictStatuses(filter), func(v string) bool { return strings.EqualFold(v, value) }) {
		return nil
	}
	return errorf(http.StatusBadRequest, "InvalidParameter."+filter, "The specified parameter %s is not valid.", filter)
}

// arrangement is how one listing call orders and pages its records.
type arrangement struct {
	b       Behaviour
	tieSeed uint64 // the order of ties: the server's seed, or this call's own when Unstable
	now     time.Time
}

// arrangement takes a snapshot of the behaviour for one listing call. A
// look-up (by InvokeId) is exact: neither reordered nor drifting.
func (s *Server) arrangement(lookup bool) arrangement {
	s.bhv.mu.Lock()
	a := arrangement{b: s.bhv.b, tieSeed: s.bhv.tieSeed, now: s.opts.Now()}
	s.bhv.mu.Unlock()
	if a.b.Unstable {
		a.tieSeed = rand.Uint64()
	}
	if lookup {
		a.b.Order, a.b.Ties, a.b.Unstable, a.b.Drift = "", false, false, false
	}
	return a
}

func (a arrangement) shuffled() bool    { return a.b.Ties || a.b.Unstable }
func (a arrangement) oldestFirst() bool { return a.b.Order == OrderOldest }

// orderKey places a record in a listing: an invocation (by its creation
// second, its rank among ties, its sequence) and a row within it.
type orderKey struct {
	second int64
	tie    uint64
	seq    uint64
	idx    uint32
}

func (a arrangement) key(inv *invocation, idx int) orderKey {
	k := orderKey{second: inv.CreationTime.Unix(), seq: inv.Seq, idx: uint32(idx)}
	if a.shuffled() {
		k.tie = mix(fnv1a(fnvOffset^a.tieSeed, inv.InvokeID))
	}
	return k
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// fnv1a hashes s into h (FNV-1a), without allocating: listings hash every
// record they hold on every call.
func fnv1a(h uint64, s string) uint64 {
	for i := range len(s) {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// mix spreads a hash's bits (the splitmix64 finaliser), so that ties are
// ordered by all of it.
func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

// compare orders two keys as the listing lists them: negative when x
// comes first. Rows within an invocation always keep their order.
func (a arrangement) compare(x, y orderKey) int {
	dir := -1
	if a.oldestFirst() {
		dir = 1
	}
	if a.shuffled() {
		if c := cmp.Compare(x.second, y.second); c != 0 {
			return dir * c
		}
		if c := cmp.Compare(x.tie, y.tie); c != 0 {
			return c
		}
	}
	if c := cmp.Compare(x.seq, y.seq); c != 0 {
		return dir * c
	}
	return cmp.Compare(x.idx, y.idx)
}

// sort puts invocations, given newest first by sequence as the emulator
// keeps them, in listing order.
func (a arrangement) sort(invs []*invocation) {
	switch {
	case a.shuffled():
	case a.oldestFirst():
		slices.Reverse(invs)
		return
	default:
		return
	}
	type keyed struct {
		inv *invocation
		key orderKey
	}
	ks := make([]keyed, len(invs))
	for i, inv := range invs {
		ks[i] = keyed{inv, a.key(inv, 0)}
	}
	slices.SortFunc(ks, func(x, y keyed) int { return a.compare(x.key, y.key) })
	for i := range ks {
		invs[i] = ks[i].inv
	}
}

// pageToken is what a NextToken carries, so that any behaviour can read
// it: the last record returned (an exact cursor continues after it), how
// many records the listing had returned (a drifting token continues at that
// offset), when it was issued (TokenTTL) and a digest of the data paged
// through (TokenExpiresOnChange).
type pageToken struct {
	kind   byte
	last   orderKey
	offset uint32
	issued int64
	digest uint64
}

const pageTokenLen = 1 + 8 + 8 + 8 + 4 + 4 + 8 + 8

func (t pageToken) encode() string {
	raw := make([]byte, 0, pageTokenLen)
	raw = append(raw, t.kind)
	raw = binary.BigEndian.AppendUint64(raw, uint64(t.last.second))
	raw = binary.BigEndian.AppendUint64(raw, t.last.tie)
	raw = binary.BigEndian.AppendUint64(raw, t.last.seq)
	raw = binary.BigEndian.AppendUint32(raw, t.last.idx)
	raw = binary.BigEndian.AppendUint32(raw, t.offset)
	raw = binary.BigEndian.AppendUint64(raw, uint64(t.issued))
	raw = binary.BigEndian.AppendUint64(raw, t.digest)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func decodePageToken(raw []byte, kind byte) (pageToken, bool) {
	if len(raw) != pageTokenLen || raw[0] != kind {
		return pageToken{}, false
	}
	u64 := func(at int) uint64 { return binary.BigEndian.Uint64(raw[at:]) }
	return pageToken{
		kind:   kind,
		last:   orderKey{second: int64(u64(1)), tie: u64(9), seq: u64(17), idx: binary.BigEndian.Uint32(raw[25:])},
		offset: binary.BigEndian.Uint32(raw[29:]),
		issued: int64(u64(33)),
		digest: u64(41),
	}, true
}

// digest sums one hash per record, so that it does not depend on order:
// it changes when a record arrives, leaves or changes.
type digest uint64

// recordHash hashes one record's fields without allocating: a listing
// hashes every record it holds.
type recordHash uint64

func newRecordHash() recordHash { return fnvOffset }

func (h recordHash) str(s string) recordHash {
	return recordHash((fnv1a(uint64(h), s) ^ 0xff) * fnvPrime)
}

func (h recordHash) num(n int) recordHash { return recordHash(mix(uint64(h) ^ uint64(n))) }

func (d *digest) add(h recordHash) { *d += digest(mix(uint64(h))) }

// invocationsDigest is the digest of an invocation listing: ids and
// statuses, at both levels.
func invocationsDigest(invs []*invocation) uint64 {
	var d digest
	for _, inv := range invs {
		h := newRecordHash().str(inv.InvokeID).str(inv.Status)
		for _, r := range inv.Runs {
			h = h.str(r.InstanceID).str(r.Status).num(r.Repeats)
		}
		d.add(h)
	}
	return uint64(d)
}

// page selects one page of n records in listing order (keyOf gives the
// key of the i-th) for the request p, and the NextToken of the next one.
// kind tells one action's tokens from another's. digestOf, the digest of
// the records, is only computed under TokenExpiresOnChange: a token issued
// before it was set is refused as if its data had changed.
func (a arrangement) page(kind byte, n int, keyOf func(int) orderKey, digestOf func() uint64, p pageRequest) (start, end int, next string, e *apiError) {
	var dig uint64
	if a.b.TokenExpiresOnChange {
		dig = digestOf()
	}
	switch {
	case p.tokenSet:
		tok, ok := decodePageToken(p.token, kind)
		if !ok {
			return 0, 0, "", badToken()
		}
		if ttl := time.Duration(a.b.TokenTTL); ttl > 0 && a.now.Sub(time.Unix(0, tok.issued)) > ttl {
			return 0, 0, "", badToken()
		}
		if a.b.TokenExpiresOnChange && tok.digest != dig {
			return 0, 0, "", badToken()
		}
		if a.b.Drift {
			start = min(int(tok.offset), n)
		} else {
			start = sort.Search(n, func(i int) bool { return a.compare(keyOf(i), tok.last) > 0 })
		}
	case !p.byToken:
		start = min((p.number-1)*p.size, n)
	}
	end = min(start+p.size, n)
	if end < n && end > start {
		next = pageToken{kind: kind, last: keyOf(end - 1), offset: uint32(end), issued: a.now.UnixNano(), digest: dig}.encode()
	}
	return start, end, next, nil
}
