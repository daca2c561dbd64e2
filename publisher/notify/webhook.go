package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxSlackSection is the longest text of a Block Kit section.
const maxSlackSection = 3000

// request is one POST to a webhook: where, and what.
type request struct {
	url  string
	body []byte
}

// payload is what a webhook gets: one invocation's summary, or a
// digest of several.
type payload struct {
	summaries []Summary
	digest    bool
	maxItems  int
}

func (p payload) doc() doc {
	if p.digest {
		return digestDoc(p.summaries, p.maxItems)
	}
	return p.summaries[0].doc()
}

// marshal encodes v as JSON without HTML escaping (chat texts hold "<",
// "&" and "→" as they are).
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// DingTalkSign is a DingTalk custom robot's signature of a timestamp in
// milliseconds: base64 of HMAC-SHA256, keyed with the secret, over
// timestamp+"\n"+secret (the caller URL-encodes it as a query value).
func DingTalkSign(timestampMs int64, secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(timestampMs, 10) + "\n" + secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// FeishuSign is a Feishu/Lark custom bot's signature of a timestamp in
// seconds: base64 of HMAC-SHA256 keyed with timestamp+"\n"+secret over
// an empty message.
func FeishuSign(timestampSec int64, secret string) string {
	mac := hmac.New(sha256.New, []byte(strconv.FormatInt(timestampSec, 10)+"\n"+secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// build makes the webhook's request for a payload at now (signatures).
func (w Webhook) build(p payload, now time.Time) (request, error) {
	d := p.doc()
	var body any
	u := w.url
	switch w.Kind {
	case KindDingTalk:
		type markdown struct {
			Title string `json:"title"`
			Text  string `json:"text"`
		}
		body = struct {
			MsgType  string   `json:"msgtype"`
			Markdown markdown `json:"markdown"`
		}{"markdown", markdown{d.title, d.render(mdDialect())}}
		if w.secret != "" {
			ts := now.UnixMilli()
			sep := "?"
			if strings.Contains(u, "?") {
				sep = "&"
			}
			u += sep + "timestamp=" + strconv.FormatInt(ts, 10) + "&sign=" + url.QueryEscape(DingTalkSign(ts, w.secret))
		}
	case KindSlack:
		dl := slackMrkdwn()
		text := d.render(dl)
		type textObj struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		type block struct {
			Type string  `json:"type"`
			Text textObj `json:"text"`
		}
		msg := struct {
			Text   string  `json:"text"`
			Blocks []block `json:"blocks,omitempty"`
		}{Text: text}
		if w.Blocks {
			// A section per output, so that the main one's cut never
			// falls in a code block, and each stays within Slack's bound.
			section := func(s string) block { return block{Type: "section", Text: textObj{Type: "mrkdwn", Text: s}} }
			main := d.renderMain(dl)
			for _, l := range d.tail {
				main += "\n\n" + dl.escape(l)
			}
			if len(main) > maxSlackSection {
				main = trimTo(main, maxSlackSection-len("…")) + "…"
			}
			msg.Blocks = []block{section(main)}
			for _, o := range d.outputs {
				msg.Blocks = append(msg.Blocks, section(fitOutput(o, dl, maxSlackSection)))
			}
			if d.outputsTail != "" {
				msg.Blocks = append(msg.Blocks, section(dl.escape(d.outputsTail)))
			}
		}
		body = msg
	case KindFeishu:
		var ts, sign string
		if w.secret != "" {
			sec := now.Unix()
			ts, sign = strconv.FormatInt(sec, 10), FeishuSign(sec, w.secret)
		}
		if w.Card {
			type text struct {
				Tag     string `json:"tag"`
				Content string `json:"content"`
			}
			type element struct {
				Tag  string `json:"tag"`
				Text text   `json:"text"`
			}
			type header struct {
				Title    text   `json:"title"`
				Template string `json:"template"`
			}
			type card struct {
				Header   header    `json:"header"`
				Elements []element `json:"elements"`
			}
			main := d.renderMain(larkMd())
			for _, l := range d.tail {
				main += "\n\n" + breakMentions(l)
			}
			// Outputs are plain_text elements: no markup, no mention.
			elements := []element{{Tag: "div", Text: text{"lark_md", main}}}
			plain := func(s string) element { return element{Tag: "div", Text: text{"plain_text", breakMentions(s)}} }
			for _, o := range d.outputs {
				elements = append(elements, plain(o.heading))
				if o.text != "" {
					elements = append(elements, plain(o.text))
				}
				if o.notes != "" {
					elements = append(elements, plain(o.notes))
				}
			}
			if d.outputsTail != "" {
				elements = append(elements, plain(d.outputsTail))
			}
			body = struct {
				Timestamp string `json:"timestamp,omitempty"`
				Sign      string `json:"sign,omitempty"`
				MsgType   string `json:"msg_type"`
				Card      card   `json:"card"`
			}{ts, sign, "interactive", card{Header: header{Title: text{"plain_text", d.title}, Template: "red"}, Elements: elements}}
		} else {
			type content struct {
				Text string `json:"text"`
			}
			body = struct {
				Timestamp string  `json:"timestamp,omitempty"`
				Sign      string  `json:"sign,omitempty"`
				MsgType   string  `json:"msg_type"`
				Content   content `json:"content"`
			}{ts, sign, "text", content{"[capoller] " + d.render(feishuText())}}
		}
	case KindGeneric:
		kind, sums := "invocation", p.summaries
		var outs []DigestOutput
		if p.digest {
			// The few outputs the digest shows, not each invocation's.
			kind, sums = "digest", slices.Clone(p.summaries)
			for i := range sums {
				sums[i].Outputs, sums[i].OtherOutputs, sums[i].OtherOutputInstances = nil, 0, 0
			}
			outs, _ = digestOutputs(p.summaries)
		}
		body = struct {
			Type      string         `json:"type"`
			Title     string         `json:"title"`
			Text      string         `json:"text"`
			Summaries []Summary      `json:"summaries"`
			Outputs   []DigestOutput `json:"outputs,omitempty"`
		}{kind, d.title, d.render(plainText()), sums, outs}
	}
	b, err := marshal(body)
	if err != nil {
		return request{}, fmt.Errorf("encode the %s message: %w", w.Kind, err)
	}
	return request{url: u, body: b}, nil
}

// fitOutput renders an output within max bytes: while it is longer, its
// first lines go ("…" in their place), then the start of its last line.
func fitOutput(o outputBlock, dl dialect, max int) string {
	s := o.render(dl)
	for len(s) > max && o.text != "" {
		lines := strings.Split(strings.TrimPrefix(o.text, "…\n"), "\n")
		before := o.text
		if len(lines) > 1 {
			o.text = "…\n" + strings.Join(lines[1:], "\n")
		} else {
			o.text = "…" + trimHead(strings.TrimPrefix(lines[0], "…"), len(lines[0])/2)
		}
		if o.text == before {
			break
		}
		s = o.render(dl)
	}
	if len(s) > max { // a heading or notes too long: never in practice
		s = trimTo(s, max-len("…")) + "…"
	}
	return s
}

// trimHead keeps the last n bytes of s at most, never splitting a
// character.
func trimHead(s string, n int) string {
	if len(s) <= n {
		return s
	}
	start := len(s) - n
	for start < len(s) && (s[start]&0xC0) == 0x80 {
		start++
	}
	return s[start:]
}

func trimTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n]
}

// PostError is a webhook's refusal or a failure to reach it. It never
// holds the URL (which carries the bot's token).
type PostError struct {
	// Status is the HTTP status, 0 if there was no answer.
	Status int
	// Code is the service's error code in a 200 answer (DingTalk errcode,
	// Feishu code), 0 if none.
	Code int
	// Retryable: 429, 5xx, network errors and the services' own "too
	// fast" or "busy" codes.
	Retryable bool
	// RetryAfter is what the webhook asked us to wait, 0 if nothing.
	RetryAfter time.Duration
	Msg        string
}

func (e *PostError) Error() string {
	switch {
	case e.Status == 0:
		return e.Msg
	case e.Code != 0:
		return fmt.Sprintf("HTTP %d, code %d: %s", e.Status, e.Code, e.Msg)
	}
	return fmt.Sprintf("HTTP %d: %s", e.Status, e.Msg)
}

// doer is the HTTP client a webhook posts with.
type doer interface {
	Do(*http.Request) (*http.Response, error)
}

// post sends one request and checks the service's answer.
func (w Webhook) post(ctx context.Context, client doer, r request, now time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(r.body))
	if err != nil {
		return &PostError{Msg: "bad webhook URL"}
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // a url.Error quotes the URL, token and all
		}
		return &PostError{Retryable: true, Msg: "post: " + err.Error()}
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	text := strings.TrimSpace(string(body))
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return &PostError{Status: resp.StatusCode, Retryable: true, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), now), Msg: short(text)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &PostError{Status: resp.StatusCode, Msg: short(text)}
	}
	switch w.Kind {
	case KindDingTalk:
		var ans struct {
			ErrCode *int   `json:"errcode"`
			ErrMsg  string `json:"errmsg"`
		}
		if err := json.Unmarshal(body, &ans); err != nil || ans.ErrCode == nil {
			return &PostError{Status: resp.StatusCode, Msg: "not a DingTalk answer: " + short(text)}
		}
		if *ans.ErrCode != 0 {
			// 130101 "send too fast" and 410100 (throttled), -1 "system busy".
			retry := *ans.ErrCode == 130101 || *ans.ErrCode == 410100 || *ans.ErrCode == -1
			return &PostError{Status: resp.StatusCode, Code: *ans.ErrCode, Retryable: retry, Msg: short(ans.ErrMsg)}
		}
	case KindFeishu:
		var ans struct {
			Code       *int   `json:"code"`
			Msg        string `json:"msg"`
			StatusCode *int   `json:"StatusCode"` // the older answer
		}
		if err := json.Unmarshal(body, &ans); err != nil || (ans.Code == nil && ans.StatusCode == nil) {
			return &PostError{Status: resp.StatusCode, Msg: "not a Feishu answer: " + short(text)}
		}
		code := ans.Code
		if code == nil {
			code = ans.StatusCode
		}
		if *code != 0 {
			// 11232: the bot's frequency limit.
			return &PostError{Status: resp.StatusCode, Code: *code, Retryable: *code == 11232, Msg: short(ans.Msg)}
		}
	case KindSlack:
		if text != "ok" {
			return &PostError{Status: resp.StatusCode, Msg: "Slack answered " + short(text)}
		}
	}
	return nil
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func short(s string) string {
	if len(s) > 200 {
		return trimTo(s, 200) + "…"
	}
	return s
}
