package castest

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

// control serves the /_casim/ control plane. It is not Alibaba's API and
// needs no signature:
//
//	GET    /_casim/accounts         the names of the accounts served, as a JSON array
//	GET    /_casim/instances        the fleet, as a JSON array (each with its account)
//	POST   /_casim/instances/{id}   {"status": "Running|Stopped|Released", "agent": "Running|NotRunning|NotResponding|Upgrading|Outdated", "reboot": true}
//	POST   /_casim/retention        {"policy": "current|legacy", "age": "720h", "count": 10000} (count in records; age and count override the policy)
//	GET    /_casim/truth            every status change, one JSON object per line
//	POST   /_casim/faults           add a fault rule (see Fault)
//	DELETE /_casim/faults           remove every fault rule
//	POST   /_casim/quota            {"quota": 20, "window": "1m"}: calls per account, action and region per window
//	GET    /_casim/calls            signed API calls per action
//
// GET /_casim/instances, /_casim/truth and /_casim/calls take
// ?account=NAME to show one account only; an account that is not served
// is a 404.
//
//	GET    /_casim/behaviour        the behaviour where the documents are silent (see Behaviour)
//	POST   /_casim/behaviour        replace it: {"order": "oldest", "ties": true, "tokenTTL": "5s", …}
//
// The EventBridge pushes (see EventBridge): GET answers the target (its
// token only as "tokenSet"), the delivery and the counts (PushStats); POST
// replaces the delivery whole ({} is perfect delivery), changes url and
// token only when it names them ("url": "" stops pushing), and answers as
// GET does:
//
//	GET    /_casim/eventbridge      {"url": "http://…", "tokenSet": true, "drop": 0, "duplicate": 0, "delay": "0s", "delayMax": "0s",
//	                                 "reorder": "0s", "retries": 3, "backoff": "200ms", "statuses": ["Aborted", …],
//	                                 "stats": {"events": 4, "sent": 4, "dropped": 0, "duplicated": 0, "retried": 0, "failed": 0, "pending": 0}}
//	POST   /_casim/eventbridge      {"drop": 0.1, "duplicate": 0.1, "delay": "100ms", "delayMax": "2s", "reorder": "1s", "retries": 2, "backoff": "50ms",
//	                                 "statuses": ["Success", "Failed", "Error"], "url": "http://…", "token": "…"}
func (s *Server) control(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/_casim/")
	account := r.URL.Query().Get("account")
	if account != "" && !slices.Contains(s.Accounts(), account) {
		controlError(w, http.StatusNotFound, "no such account: "+account)
		return
	}
	switch {
	case path == "accounts" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Accounts())
	case path == "instances" && r.Method == http.MethodGet:
		if account != "" {
			writeJSON(w, http.StatusOK, s.Account(account).Instances())
			return
		}
		writeJSON(w, http.StatusOK, s.Instances())
	case strings.HasPrefix(path, "instances/") && r.Method == http.MethodPost:
		var body struct {
			Status string `json:"status"`
			Agent  string `json:"agent"`
			Reboot bool   `json:"reboot"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			controlError(w, http.StatusBadRequest, "decode body: "+err.Error())
			return
		}
		if err := s.changeInstance(strings.TrimPrefix(path, "instances/"), body.Status, body.Agent, body.Reboot); err != nil {
			controlError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case path == "truth" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		truth := s.Truth()
		if account != "" {
			truth = s.Account(account).Truth()
		}
		for _, e := range truth {
			_ = enc.Encode(e)
		}
	case path == "faults" && r.Method == http.MethodPost:
		var f Fault
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
			controlError(w, http.StatusBadRequest, "decode body: "+err.Error())
			return
		}
		if err := s.InjectFault(f); err != nil {
			controlError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case path == "faults" && r.Method == http.MethodDelete:
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case path == "retention" && r.Method == http.MethodPost:
		var body struct {
			Policy RetentionPolicy `json:"policy"`
			Age    string          `json:"age"`
			Count  int             `json:"count"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			controlError(w, http.StatusBadRequest, "decode body: "+err.Error())
			return
		}
		if body.Policy != "" {
			if err := s.SetRetentionPolicy(body.Policy); err != nil {
				controlError(w, http.StatusBadRequest, err.Error())
				return
			}
		}
		var age time.Duration
		if body.Age != "" {
			var err error
			if age, err = time.ParseDuration(body.Age); err != nil {
				controlError(w, http.StatusBadRequest, "age: "+err.Error())
				return
			}
		}
		if err := s.SetRetention(age, body.Count); err != nil {
			controlError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case path == "quota" && r.Method == http.MethodPost:
		var body struct {
			Quota  int    `json:"quota"`
			Window string `json:"window"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			controlError(w, http.StatusBadRequest, "decode body: "+err.Error())
			return
		}
		window := time.Minute
		if body.Window != "" {
			var err error
			if window, err = time.ParseDuration(body.Window); err != nil {
				controlError(w, http.StatusBadRequest, "window: "+err.Error())
				return
			}
		}
		if err := s.SetQuota(body.Quota, window); err != nil {
			controlError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case path == "calls" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.callsOf(account))
	case path == "behaviour":
		s.controlBehaviour(w, r)
	case path == "eventbridge":
		s.controlEventBridge(w, r)
	default:
		controlError(w, http.StatusNotFound, "no such control endpoint: "+r.Method+" "+r.URL.Path)
	}
}

func controlError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
