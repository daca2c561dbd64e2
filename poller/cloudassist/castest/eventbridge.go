package castest

import (
	"bytes"
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// TaskCompletedType is the CloudEvents type of the event Alibaba pushes
// through EventBridge when a Cloud Assistant run ends on an ECS instance.
const TaskCompletedType = "ecs:CloudAssistant:TaskCompleted"

// Defaults of a PushDelivery.
const (
	defaultPushRetries = 3
	defaultPushBackoff = 200 * time.Millisecond
	pushTimeout        = 5 * time.Second // one POST; a receiver that hangs is a failed POST
)

// documentedPushStatuses are the instance statuses (InvocationStatus) on
// which the documents say Alibaba pushes TaskCompleted: "only when a Cloud
// Assistant task enters one of the following states on an ECS instance".
// They leave out Error and Stopped.
func documentedPushStatuses() []string {
	return []string{stAborted, stSuccess, stFailed, stInvalid, stTimeout, stCancelled, stTerminated}
}

// pushableStatuses are the statuses a run of the emulator ends in on an
// instance: the documented ones, and the two the documents leave out.
func pushableStatuses() []string {
	return append(documentedPushStatuses(), stError, stStopped)
}

// TaskCompleted is an ecs:CloudAssistant:TaskCompleted event, a CloudEvents
// 1.0 envelope with Alibaba's EventBridge extensions, as the emulator POSTs
// it in structured mode (Content-Type: application/cloudevents+json).
//
// Its shape follows the sample of "Use EventBridge and Cloud Monitor to
// subscribe to Cloud Assistant events",
// https://www.alibabacloud.com/help/en/ecs/user-guide/subscribe-to-cloud-assistant-events
// (also in Chinese at https://www.alibabacloud.com/help/zh/ecs/user-guide/subscribe-to-cloud-assistant-events).
// What that sample shows: id, source acs.ecs, specversion 1.0, subject,
// time (RFC 3339), type, aliyunaccountid, aliyunpublishtime,
// aliyuneventbusname "default", aliyunregionid, aliyunpublishaddr, and data
// with commandId, commandName, exitCode as a string ("0"), finishTime
// ("2023-12-14T07:39:48Z"), instanceId and invocationStatus. What the
// emulator adds where the copy we could read was cut short: data's invokeId,
// repeats (a number, as DescribeInvocations has it), errorCode and
// errorInfo, and the envelope's datacontenttype and aliyunoriginalaccountid
// (the same uid: no event crosses accounts here). The sample's subject
// ("acs.ecs:cn-hangzhou:123456789098****:215672") is a placeholder; the
// emulator sends the resource's ARN, acs:ecs:REGION:UID:instance/ID, as
// other acs.ecs events do. A consumer should read data, not subject.
type TaskCompleted struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"` // a UUID; a duplicate delivery has the same
	Source          string `json:"source"`
	Type            string `json:"type"`
	Subject         string `json:"subject"`
	Time            string `json:"time"` // when the run ended, RFC 3339
	DataContentType string `json:"datacontenttype"`
	// AliyunAccountID is the account's UID (Account.UID, Options.UID).
	AliyunAccountID         string            `json:"aliyunaccountid"`
	AliyunRegionID          string            `json:"aliyunregionid"`
	AliyunPublishTime       string            `json:"aliyunpublishtime"` // when this delivery was POSTed
	AliyunOriginalAccountID string            `json:"aliyunoriginalaccountid"`
	AliyunEventBusName      string            `json:"aliyuneventbusname"`
	AliyunPublishAddr       string            `json:"aliyunpublishaddr"`
	Data                    TaskCompletedData `json:"data"`
}

// TaskCompletedData is a TaskCompleted event's data: the run on one
// instance, with the values DescribeInvocations shows for it.
type TaskCompletedData struct {
	InvokeID   string `json:"invokeId"`
	InstanceID string `json:"instanceId"`
	// InvocationStatus is the run's status on the instance, as
	// DescribeInvocations' InvokeInstances name it (Success, Failed, …).
	InvocationStatus string `json:"invocationStatus"`
	// ExitCode is a string in the documented sample, and so here.
	ExitCode    string `json:"exitCode"`
	FinishTime  string `json:"finishTime"` // as DescribeInvocations' FinishTime: "2006-01-02T15:04:05Z"
	CommandName string `json:"commandName"`
	CommandID   string `json:"commandId"`
	Repeats     int    `json:"repeats"`
	ErrorCode   string `json:"errorCode"`
	ErrorInfo   string `json:"errorInfo"`
}

// EventBridge is where the emulator pushes its TaskCompleted events, and
// how reliably.
//
// Each time a run of an ECS invocation ends on an instance in one of
// Delivery.Statuses (by default the seven documented ones: Aborted,
// Success, Failed, Invalid, Timeout, Cancelled, Terminated; not Error nor
// Stopped, which the documents leave out), the emulator POSTs one event to
// URL, on its own goroutine: neither API requests nor the emulator's clock
// wait for it. SWAS runs push nothing, as SWAS has no such event. A run of
// a periodic task pushes an event each time it ends (repeats tells which).
type EventBridge struct {
	// URL receives each event in a POST; "" pushes nothing.
	URL string
	// Token, if set, is sent as "Authorization: Bearer TOKEN".
	Token string
	// Delivery makes the pushes as unreliable as EventBridge may be; its
	// zero value sends every event once, in order, at once.
	Delivery PushDelivery
}

// PushDelivery is how best-effort the pushes are. Each event is dropped
// with probability Drop, else duplicated (two POSTs with the same id) with
// probability Duplicate; each POST waits its Delay; and with Reorder the
// events are held and sent in a random order. A POST that fails (no answer
// within 5s, or not 2xx) is retried, then given up. Zero values take the
// defaults.
type PushDelivery struct {
	// Drop is the probability (0..1) that an event is never sent.
	Drop float64 `json:"drop"`
	// Duplicate is the probability (0..1) that an event is sent twice.
	Duplicate float64 `json:"duplicate"`
	// Delay holds each POST this long; with DelayMax above it, for a
	// random time between the two (which also reorders).
	Delay    Duration `json:"delay"`
	DelayMax Duration `json:"delayMax"`
	// Reorder holds events for this long from the first one held, then
	// sends every event held in a random order; 0 keeps the order.
	Reorder Duration `json:"reorder"`
	// Retries is how many times a failed POST is retried, Backoff after
	// the failure and doubling each time; then the event is given up.
	// Zero means 3 retries from 200ms; a negative Retries, none.
	Retries int      `json:"retries"`
	Backoff Duration `json:"backoff"`
	// Statuses are the instance statuses whose runs push an event;
	// empty means the documented seven. Error and Stopped may be added.
	Statuses []string `json:"statuses"`
}

// withDefaults fills in d's zero values.
func (d PushDelivery) withDefaults() PushDelivery {
	if d.Retries == 0 {
		d.Retries = defaultPushRetries
	}
	if d.Backoff == 0 {
		d.Backoff = Duration(defaultPushBackoff)
	}
	if len(d.Statuses) == 0 {
		d.Statuses = documentedPushStatuses()
	}
	d.Statuses = slices.Clone(d.Statuses)
	return d
}

// Validate reports whether the emulator can deliver as d says.
func (d PushDelivery) Validate() error {
	switch {
	case d.Drop < 0 || d.Drop > 1:
		return fmt.Errorf("castest: push drop rate %v: want 0..1", d.Drop)
	case d.Duplicate < 0 || d.Duplicate > 1:
		return fmt.Errorf("castest: push duplicate rate %v: want 0..1", d.Duplicate)
	case d.Delay < 0 || d.DelayMax < 0 || d.Reorder < 0 || d.Backoff < 0:
		return fmt.Errorf("castest: push delays must not be negative")
	case d.DelayMax != 0 && d.DelayMax < d.Delay:
		return fmt.Errorf("castest: push delayMax %s is below delay %s", d.DelayMax, d.Delay)
	}
	for _, st := range d.Statuses {
		if !slices.Contains(pushableStatuses(), st) {
			return fmt.Errorf("castest: push status %q: want some of %v", st, pushableStatuses())
		}
	}
	return nil
}

// Validate reports whether e is a target the emulator can push to.
func (e EventBridge) Validate() error {
	if e.URL != "" {
		u, err := url.Parse(e.URL)
		if err != nil {
			return fmt.Errorf("castest: eventbridge url: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("castest: eventbridge url %q: want http://HOST/… or https://HOST/…", e.URL)
		}
	}
	return e.Delivery.Validate()
}

// PushStats counts what the pusher did since the emulator started, for
// tests to hold against the truth. Once nothing is Pending,
// Sent + Failed = Events - Dropped + Duplicated.
type PushStats struct {
	// Events is how many runs ended in a pushed status while a URL was set.
	Events int `json:"events"`
	// Sent is how many POSTs were answered 2xx (a duplicate is two).
	Sent int `json:"sent"`
	// Dropped is how many events the drop rate discarded.
	Dropped int `json:"dropped"`
	// Duplicated is how many events the duplicate rate sent twice.
	Duplicated int `json:"duplicated"`
	// Retried is how many failed POSTs were tried again.
	Retried int `json:"retried"`
	// Failed is how many deliveries were given up after their retries.
	Failed int `json:"failed"`
	// Pending is how many deliveries are held, delayed, waiting to be
	// retried or under way.
	Pending int `json:"pending"`
	// LastError is why the last failed POST failed.
	LastError string `json:"lastError,omitempty"`
}

// pusher sends the events on a goroutine of its own. Its lock is taken
// under s.mu (offer) but never the other way round, and it never holds it
// over a POST.
type pusher struct {
	now       func() time.Time // the emulator's clock, for aliyunpublishtime
	transport *http.Transport
	client    *http.Client
	ctx       context.Context // ends at close, aborting a POST under way
	cancel    context.CancelFunc
	wake      chan struct{}
	done      chan struct{}

	mu       sync.Mutex
	target   EventBridge // Delivery with its defaults
	rng      *mathrand.Rand
	queue    outboundQueue // by due time
	held     []*outbound   // the reorder window, in arrival order
	heldEnd  time.Time
	seq      uint64
	inflight int
	stats    PushStats
}

// outbound is one POST to make: an event (a duplicate is a second
// delivery of the same event), when, and how many times it failed.
type outbound struct {
	ev       TaskCompleted
	due      time.Time
	seq      uint64 // orders deliveries due at the same instant
	failures int
}

func newPusher(target EventBridge, now func() time.Time) (*pusher, error) {
	if err := target.Validate(); err != nil {
		return nil, err
	}
	target.Delivery = target.Delivery.withDefaults()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	ctx, cancel := context.WithCancel(context.Background())
	return &pusher{
		now: now, transport: transport, client: &http.Client{Transport: transport, Timeout: pushTimeout},
		ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), done: make(chan struct{}),
		target: target, rng: mathrand.New(mathrand.NewPCG(mathrand.Uint64(), mathrand.Uint64())),
	}, nil
}

// offer pushes the event build makes if a URL is set and status is one
// that pushes; build runs only then. Callers may hold s.mu: offer only
// queues.
func (p *pusher) offer(status string, build func() TaskCompleted) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.target.URL == "" || !slices.Contains(p.target.Delivery.Statuses, status) {
		return
	}
	p.stats.Events++
	d := p.target.Delivery
	if p.rng.Float64() < d.Drop {
		p.stats.Dropped++
		return
	}
	ev := build()
	copies := 1
	if p.rng.Float64() < d.Duplicate {
		copies = 2
		p.stats.Duplicated++
	}
	now := time.Now()
	for range copies {
		dl := &outbound{ev: ev}
		if d.Reorder > 0 {
			if len(p.held) == 0 {
				p.heldEnd = now.Add(time.Duration(d.Reorder))
			}
			p.held = append(p.held, dl)
			continue
		}
		p.schedule(dl, now.Add(p.delay()))
	}
	p.signal()
}

// delay is how long a delivery waits before its POST. Callers hold p.mu.
func (p *pusher) delay() time.Duration {
	d := p.target.Delivery
	if d.DelayMax > d.Delay {
		return time.Duration(d.Delay) + time.Duration(p.rng.Int64N(int64(d.DelayMax-d.Delay)+1))
	}
	return time.Duration(d.Delay)
}

// schedule queues dl for due. Callers hold p.mu.
func (p *pusher) schedule(dl *outbound, due time.Time) {
	p.seq++
	dl.due, dl.seq = due, p.seq
	heap.Push(&p.queue, dl)
}

func (p *pusher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run sends each delivery when it is due, one at a time, so that the order
// the knobs chose is the order the receiver sees (up to its own
// concurrency), until close.
func (p *pusher) run() {
	defer close(p.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for p.ctx.Err() == nil {
		dl, wait := p.next(time.Now())
		if dl != nil {
			p.deliver(dl)
			continue
		}
		timer.Reset(wait) // since Go 1.23 a Reset timer sends no stale tick
		select {
		case <-p.ctx.Done():
		case <-p.wake:
		case <-timer.C:
		}
	}
}

// next releases the reorder window if it is over, and returns the
// delivery due now, or how long to wait for one.
func (p *pusher) next(now time.Time) (*outbound, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.held) > 0 && !now.Before(p.heldEnd) {
		p.rng.Shuffle(len(p.held), func(i, j int) { p.held[i], p.held[j] = p.held[j], p.held[i] })
		for _, dl := range p.held {
			p.schedule(dl, now.Add(p.delay()))
		}
		p.held = nil
	}
	wait := time.Hour
	if len(p.queue) > 0 {
		if p.queue[0].due.After(now) {
			wait = p.queue[0].due.Sub(now)
		} else {
			p.inflight++
			return heap.Pop(&p.queue).(*outbound), 0
		}
	}
	if len(p.held) > 0 {
		wait = min(wait, p.heldEnd.Sub(now))
	}
	return nil, max(wait, time.Millisecond)
}

// deliver POSTs dl, then counts it as sent, or schedules its retry, or
// gives it up.
func (p *pusher) deliver(dl *outbound) {
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	err := p.post(target, dl.ev)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight--
	switch {
	case p.ctx.Err() != nil || p.target.URL == "":
		// Closing, or pushing was turned off: nobody is to receive it.
	case err == nil:
		p.stats.Sent++
	case dl.failures < p.target.Delivery.Retries:
		p.stats.Retried++
		p.stats.LastError = err.Error()
		backoff := time.Duration(p.target.Delivery.Backoff) << dl.failures
		dl.failures++
		p.schedule(dl, time.Now().Add(backoff))
	default:
		p.stats.Failed++
		p.stats.LastError = err.Error()
	}
}

// post makes one POST of ev, stamped with the time it is published.
func (p *pusher) post(target EventBridge, ev TaskCompleted) error {
	ev.AliyunPublishTime = eventTime(p.now())
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("castest: encode event: %w", err)
	}
	req, err := http.NewRequestWithContext(p.ctx, http.MethodPost, target.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("castest: push: %w", err)
	}
	req.Header.Set("Content-Type", "application/cloudevents+json")
	if target.Token != "" {
		req.Header.Set("Authorization", "Bearer "+target.Token)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("castest: push: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection is reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("castest: push: %s answered HTTP %d", target.URL, resp.StatusCode)
	}
	return nil
}

// set replaces the target. Turning pushing off forgets what was waiting:
// it had nowhere to go.
func (p *pusher) set(target EventBridge) error {
	if err := target.Validate(); err != nil {
		return err
	}
	target.Delivery = target.Delivery.withDefaults()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
	if target.URL == "" {
		p.queue, p.held = nil, nil
	}
	p.signal() // a shorter delay or window may be due sooner
	return nil
}

func (p *pusher) get() EventBridge {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.target
	t.Delivery.Statuses = slices.Clone(t.Delivery.Statuses)
	return t
}

func (p *pusher) counts() PushStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stats
	st.Pending = len(p.queue) + len(p.held) + p.inflight
	return st
}

// close stops run, aborting a POST under way, and closes the idle
// connections, whose goroutines would outlive the emulator.
func (p *pusher) close() {
	p.cancel()
	<-p.done
	p.transport.CloseIdleConnections()
}

// outboundQueue is a min-heap of deliveries by due time, then arrival.
type outboundQueue []*outbound

func (q outboundQueue) Len() int { return len(q) }
func (q outboundQueue) Less(i, j int) bool {
	if q[i].due.Equal(q[j].due) {
		return q[i].seq < q[j].seq
	}
	return q[i].due.Before(q[j].due)
}
func (q outboundQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *outboundQueue) Push(x any)   { *q = append(*q, x.(*outbound)) }
func (q *outboundQueue) Pop() any {
	old := *q
	dl := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return dl
}

// SetEventBridge replaces where and how the emulator pushes its events.
// Events already waiting keep waiting (under the new delivery's retries),
// then go to the new URL; with URL "" they are forgotten.
func (s *Server) SetEventBridge(e EventBridge) error { return s.push.set(e) }

// EventBridge returns where and how the emulator pushes its events, the
// delivery's defaults filled in.
func (s *Server) EventBridge() EventBridge { return s.push.get() }

// PushStats counts the events pushed, dropped, duplicated, retried and
// given up so far.
func (s *Server) PushStats() PushStats { return s.push.counts() }

// taskCompleted is the event of r's run ending at at. Callers hold s.mu.
func (s *Server) taskCompleted(r *run, at time.Time) TaskCompleted {
	uid := s.uidOf(r.inv.Account)
	return TaskCompleted{
		SpecVersion: "1.0", ID: newUUID(), Source: "acs.ecs", Type: TaskCompletedType,
		Subject: "acs:ecs:" + r.inv.Region + ":" + uid + ":instance/" + r.InstanceID,
		Time:    eventTime(at), DataContentType: "application/json",
		AliyunAccountID: uid, AliyunRegionID: r.inv.Region, AliyunOriginalAccountID: uid,
		AliyunEventBusName: "default", AliyunPublishAddr: "127.0.0.1",
		Data: TaskCompletedData{
			InvokeID: r.inv.InvokeID, InstanceID: r.InstanceID, InvocationStatus: r.Status,
			ExitCode: strconv.FormatInt(r.ExitCode, 10), FinishTime: fmtTime(r.Finish),
			CommandName: r.inv.Name, CommandID: r.inv.CommandID, Repeats: r.Repeats,
			ErrorCode: r.ErrorCode, ErrorInfo: errorInfo(r.ErrorCode),
		},
	}
}

// NewTaskCompleted is the event the end of a run pushes, built as the
// emulator builds its own, for a push made by hand: a test's false or
// unknown hint.
func NewTaskCompleted(region, uid, invokeID, instanceID, status string, at time.Time) TaskCompleted {
	return TaskCompleted{
		SpecVersion: "1.0", ID: newUUID(), Source: "acs.ecs", Type: TaskCompletedType,
		Subject: "acs:ecs:" + region + ":" + uid + ":instance/" + instanceID,
		Time:    eventTime(at), DataContentType: "application/json",
		AliyunAccountID: uid, AliyunRegionID: region, AliyunOriginalAccountID: uid,
		AliyunEventBusName: "default", AliyunPublishAddr: "127.0.0.1",
		Data: TaskCompletedData{InvokeID: invokeID, InstanceID: instanceID, InvocationStatus: status, ExitCode: "0", FinishTime: fmtTime(at)},
	}
}

// eventTime formats an instant as the envelope's times: RFC 3339, in
// milliseconds, UTC.
func eventTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// newUUID returns a random (version 4) UUID, as EventBridge's event ids are.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// eventBridgeState is GET /_casim/eventbridge: the target (never its
// token), the delivery and the counts.
type eventBridgeState struct {
	URL      string `json:"url"`
	TokenSet bool   `json:"tokenSet"`
	PushDelivery
	Stats PushStats `json:"stats"`
}

// controlEventBridge serves GET and POST /_casim/eventbridge. A POST
// replaces the delivery whole, as POST /_casim/behaviour does, and changes
// the URL and token only when it names them.
func (s *Server) controlEventBridge(w http.ResponseWriter, r *http.Request) {
	state := func() eventBridgeState {
		e := s.EventBridge()
		return eventBridgeState{URL: e.URL, TokenSet: e.Token != "", PushDelivery: e.Delivery, Stats: s.PushStats()}
	}
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, state())
	case http.MethodPost:
		var body struct {
			URL   *string `json:"url"`
			Token *string `json:"token"`
			PushDelivery
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			controlError(w, http.StatusBadRequest, "decode body: "+err.Error())
			return
		}
		e := s.EventBridge()
		e.Delivery = body.PushDelivery
		if body.URL != nil {
			e.URL = *body.URL
		}
		if body.Token != nil {
			e.Token = *body.Token
		}
		if err := s.SetEventBridge(e); err != nil {
			controlError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, state())
	default:
		controlError(w, http.StatusMethodNotAllowed, "eventbridge takes GET or POST, not "+r.Method)
	}
}
