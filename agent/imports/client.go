package imports

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Endpoint paths, relative to the agent's HTTP address.
const (
	CostPath         = "/v1/import/cost"
	EmailWebhookPath = "/v1/webhooks/email"
	PollsPath        = "/v1/import/polls"
)

// StatusError is an agent's answer other than 202.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("agent answered %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// postAttempts bounds the tries of PostFile while the agent is busy.
// Retrying is safe: rows carry their ids, so a body the agent took after
// all replaces itself.
const postAttempts = 5

// PostFile sends the file at path to the import endpoint of kind ("cost",
// "polls" or "email") of the agent at agentURL (e.g. http://127.0.0.1:8081;
// a query such as ?token=… is kept, for a webhook token), authenticated
// with token (a server sender's, http.server_tokens) when it is not
// empty, and returns the agent's answer. The Content-Type follows the extension (.csv, .tsv,
// .json, .ndjson, .jsonl); other files are left for the agent to
// recognise. While the agent answers 503 it waits as told by Retry-After
// (at most a minute) and tries again, up to 5 times in all.
func PostFile(ctx context.Context, agentURL, token, path, kind string) (Result, error) {
	var endpoint string
	switch kind {
	case "cost":
		endpoint = CostPath
	case "email":
		endpoint = EmailWebhookPath
	case "polls":
		endpoint = PollsPath
	default:
		return Result{}, fmt.Errorf("import kind %q: want cost, email or polls", kind)
	}
	u, err := url.Parse(agentURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Result{}, fmt.Errorf("agent address %q: want http://host:port", agentURL)
	}
	u.Path = strings.TrimRight(u.Path, "/") + endpoint
	contentType := map[string]string{".csv": "text/csv", ".tsv": "text/tab-separated-values", ".json": "application/json",
		".ndjson": "application/x-ndjson", ".jsonl": "application/x-ndjson"}[strings.ToLower(filepath.Ext(path))]
	client := &http.Client{}
	for attempt := 1; ; attempt++ {
		res, retryAfter, err := postOnce(ctx, client, u.String(), token, path, contentType)
		if retryAfter == 0 || attempt == postAttempts {
			return res, err
		}
		t := time.NewTimer(min(retryAfter, time.Minute))
		select {
		case <-ctx.Done():
			t.Stop()
			return res, fmt.Errorf("%w (gave up waiting: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// postOnce posts the file once. retryAfter is set on a 503.
func postOnce(ctx context.Context, client *http.Client, endpoint, token, path, contentType string) (res Result, retryAfter time.Duration, err error) {
	f, err := os.Open(path)
	if err != nil {
		return res, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return res, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, f)
	if err != nil {
		return res, 0, err
	}
	req.ContentLength = st.Size()
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return res, 0, fmt.Errorf("post %s: %w", filepath.Base(path), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return res, 0, fmt.Errorf("read the agent's answer: %w", err)
	}
	if resp.StatusCode != http.StatusAccepted {
		var p problem
		if json.Unmarshal(body, &p) != nil || p.Error == "" {
			p.Error = strings.TrimSpace(string(body))
		}
		if resp.StatusCode == http.StatusServiceUnavailable {
			secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			retryAfter = time.Duration(max(secs, 1)) * time.Second
		}
		return res, retryAfter, &StatusError{Code: resp.StatusCode, Message: p.Error}
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return res, 0, fmt.Errorf("the agent's answer is not an import result: %w", err)
	}
	return res, 0, nil
}

// String renders r for a terminal: a summary line, then the rejected rows.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "imported %d rows as %d events", r.Accepted, r.Events)
	if r.Summed > 0 {
		fmt.Fprintf(&b, " (%d added to an earlier row with the same key)", r.Summed)
	}
	fmt.Fprintf(&b, "; rejected %d", r.Rejected)
	if r.Ignored > 0 {
		fmt.Fprintf(&b, "; ignored %d (event kinds Tally does not record)", r.Ignored)
	}
	b.WriteByte('\n')
	if len(r.IgnoredColumns) > 0 {
		fmt.Fprintf(&b, "ignored columns: %s\n", strings.Join(r.IgnoredColumns, ", "))
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "line %d: %s\n", e.Line, e.Error)
	}
	if r.ErrorsTruncated {
		fmt.Fprintf(&b, "(%d more rejected rows not listed)\n", r.Rejected-len(r.Errors))
	}
	return b.String()
}
