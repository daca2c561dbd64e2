package bench

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/events"
)

// arrival is an event as a subscriber received it: the delivery just
// after the JetStream ack ends detection latency.
type arrival struct {
	at   time.Time
	data events.Data
}

// key names the status change the event announces, as truthKey does.
func (a arrival) key() string {
	return a.data.InvokeID + "/" + a.data.InstanceID + "/" + string(a.data.Status)
}

// arrivals collects the events of a run's subjects as they arrive.
type arrivals struct {
	mu  sync.Mutex
	got []arrival
	sub *nats.Subscription
}

// subscribe collects the events under prefix until close.
func subscribe(nc *nats.Conn, prefix string) (*arrivals, error) {
	a := &arrivals{}
	sub, err := nc.Subscribe(prefix+".>", func(m *nats.Msg) {
		var ev publisher.Event
		if json.Unmarshal(m.Data, &ev) == nil {
			a.mu.Lock()
			a.got = append(a.got, arrival{at: time.Now(), data: ev.Data})
			a.mu.Unlock()
		}
	})
	if err != nil {
		return nil, err
	}
	a.sub = sub
	return a, nil
}

// take returns what arrived since the last take.
func (a *arrivals) take() []arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.got
	a.got = nil
	return out
}

func (a *arrivals) close() { _ = a.sub.Unsubscribe() }

// firstChanges is when the emulator first made each status change, by
// the key arrival.key names it with.
func firstChanges(truth []castest.TruthEntry) map[string]time.Time {
	first := map[string]time.Time{}
	for _, e := range truth {
		k := e.InvokeID + "/" + e.InstanceID + "/" + e.To
		if _, ok := first[k]; !ok {
			first[k] = e.Time
		}
	}
	return first
}
