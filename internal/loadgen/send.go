package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Response mirrors the agent's 202 body.
type Response struct {
	Accepted int `json:"accepted"`
	Rejected int `json:"rejected"`
	Errors   []struct {
		Index int    `json:"index"`
		Error string `json:"error"`
	} `json:"errors"`
}

// Client posts events to an agent.
type Client struct {
	// URL is the agent's events endpoint, e.g. http://127.0.0.1:8081/v1/events.
	URL  string
	HTTP *http.Client
	// Token, when set, is sent as "Authorization: Bearer TOKEN": the
	// client is a server sender (a backend), whose events' ip and ua the
	// agent believes. Without it the agent takes the client for a
	// browser and ignores them.
	Token string
	// Busy counts 503 answers the client waited out.
	Busy int
}

// ErrRejected reports an agent that rejected generated (valid) events.
var ErrRejected = errors.New("agent rejected generated events")

// EncodeNDJSON renders events as NDJSON.
func EncodeNDJSON(events []Event) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for i := range events {
		_ = enc.Encode(&events[i])
	}
	return buf.Bytes()
}

// Post sends events as one NDJSON body. On 503 it waits for Retry-After
// and tries again until ctx is done. It returns nil only when the agent
// accepted every event. A transport error is returned as is: the caller
// cannot know whether the agent accepted the body.
func (c *Client) Post(ctx context.Context, events []Event) error {
	body := EncodeNDJSON(events)
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-ndjson")
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
			var r Response
			if err := json.Unmarshal(data, &r); err != nil {
				return fmt.Errorf("decode answer: %w", err)
			}
			if r.Accepted != len(events) {
				return fmt.Errorf("%w: accepted %d of %d: %s", ErrRejected, r.Accepted, len(events), data)
			}
			return nil
		case http.StatusServiceUnavailable:
			c.Busy++
			wait := time.Second
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
				wait = time.Duration(s) * time.Second
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		default:
			return fmt.Errorf("agent answered %d: %s", resp.StatusCode, data)
		}
	}
}
