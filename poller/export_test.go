package poller

import "context"

// LookUpDue runs, for tests, the look-up cycle of the hints due now, as
// the poller's loop does between its listings: its report, and whether
// any hint was due.
func (p *Poller) LookUpDue(ctx context.Context) (Report, bool) {
	rep, hints, _ := p.lookUpDue(ctx)
	return rep, hints != nil
}
