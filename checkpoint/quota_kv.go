package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Take takes one call from the quota named key (shared by every store on
// the same bucket), which lets perSecond calls a second go with burst at
// once. Wait 0 means the call is admitted; otherwise nothing was taken and
// the caller should come back after wait.
//
// It is the GCRA of redis_rate (see gcra) on the value quota.<key
// escaped> (see kvQuotaKey), which holds the theoretical arrival time in
// Unix nanoseconds. An admitted call writes it with a compare-and-set on
// the revision it read; when another replica wrote first, the call is
// decided again on what that replica wrote. Time is the caller's now:
// replicas' clocks should agree to well within an emission interval (NTP
// does); an arrival time further ahead than the burst, written by a fast
// clock, is taken for an idle quota rather than starving the others.
// The value outlives the quota's use; it is a few bytes per account,
// region and API.
func (k *KV) Take(ctx context.Context, key string, perSecond float64, burst int, now time.Time) (time.Duration, error) {
	interval, err := quotaInterval(perSecond, burst)
	if err != nil {
		return 0, err
	}
	name, err := kvQuotaKey(key)
	if err != nil {
		return 0, err
	}
	for {
		var tat time.Time
		var rev uint64
		entry, err := k.kv.Get(ctx, name)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return 0, fmt.Errorf("checkpoint: read quota %s from key-value: %w", key, err)
		default:
			rev = entry.Revision()
			// A value that is no time cannot be repaired by waiting: it
			// counts as an idle quota and is overwritten.
			if ns, err := strconv.ParseInt(string(entry.Value()), 10, 64); err == nil {
				tat = time.Unix(0, ns)
			}
		}
		// A correct arrival time is never further ahead than the burst:
		// one further ahead was written by a replica whose clock runs fast,
		// and would starve every other replica for as long as the skew
		// lasts. It is taken for an idle quota: at worst the group admits
		// one burst too many.
		if tat.After(now.Add(time.Duration(burst+1) * interval)) {
			tat = time.Time{}
		}
		next, wait := gcra(tat, now, interval, burst)
		if wait > 0 {
			return wait, nil
		}
		value := []byte(strconv.FormatInt(next.UnixNano(), 10))
		if rev == 0 {
			_, err = k.kv.Create(ctx, name, value)
		} else {
			_, err = k.kv.Update(ctx, name, value, rev)
		}
		switch {
		case err == nil:
			return 0, nil
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch), isWrongLastSequence(err):
			// Another replica took a call meanwhile: decide again on
			// what it wrote. Each lost race is a call admitted
			// elsewhere, so the loop ends once the quota is spent.
		default:
			return 0, fmt.Errorf("checkpoint: write quota %s to key-value: %w", key, err)
		}
	}
}
