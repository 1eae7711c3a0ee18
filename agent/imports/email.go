package imports

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

// emailTypes maps webhook event names to Tally event types. Names not
// listed (delivered, processed, deferred, spamreport, unsubscribe, …) are
// ignored and counted.
var emailTypes = map[string]string{
	"open": "email_open", "opened": "email_open", "email_open": "email_open",
	"click": "email_click", "clicked": "email_click", "email_click": "email_click",
	"bounce": "bounce", "bounced": "bounce", "dropped": "bounce",
}

// emailItem is one webhook event, generic or SendGrid. SendGrid puts
// custom arguments at the top level of the event, so a `campaign` custom
// argument lands in Campaign like the generic format's field.
type emailItem struct {
	Event     string          `json:"event"`
	Timestamp json.RawMessage `json:"timestamp"`
	// ID is the generic format's event id; SendGrid events use
	// SGEventID, and an `id` there is a custom argument.
	ID          flexString `json:"id"`
	SGEventID   string     `json:"sg_event_id"`
	SGMessageID string     `json:"sg_message_id"`
	SMTPID      string     `json:"smtp-id"`

	Email       string     `json:"email"`
	Recipient   flexString `json:"recipient"`
	RecipientID flexString `json:"recipient_id"`

	Campaign    flexString      `json:"campaign"`
	UTMCampaign string          `json:"utm_campaign"`
	Source      string          `json:"source"`
	UTMSource   string          `json:"utm_source"`
	Medium      string          `json:"medium"`
	UTMMedium   string          `json:"utm_medium"`
	Country     string          `json:"country"`
	Category    json.RawMessage `json:"category"`
	URL         string          `json:"url"`
	UserAgent   string          `json:"useragent"`
}

// flexString takes a JSON string or number (ids and campaign custom
// arguments are sometimes numeric).
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	s, _, err := stringValue(b)
	*f = flexString(s)
	return err
}

func (it *emailItem) sendGrid() bool {
	return it.SGEventID != "" || it.SGMessageID != "" || it.SMTPID != ""
}

// serveEmail implements POST /v1/webhooks/email.
func (h *Handlers) serveEmail(w http.ResponseWriter, r *http.Request) {
	const kind = "email"
	if !h.admit(w, r, kind, true) {
		return
	}
	b, ok := h.readBody(w, r, kind)
	if !ok {
		return
	}
	defer b.Release()
	body := b.Bytes
	if h.sgKey != nil {
		if err := verifySendGrid(h.sgKey, r.Header, body); err != nil {
			h.fail(w, kind, http.StatusUnauthorized, err.Error())
			return
		}
	}
	body = bytes.TrimPrefix(body, utf8BOM)
	if len(bytes.TrimSpace(body)) == 0 {
		h.fail(w, kind, http.StatusBadRequest, "empty body: send a JSON array or NDJSON of email events")
		return
	}
	items, err := splitJSON(body, h.cfg.MaxRows)
	if h.failedBody(w, kind, err) {
		return
	}
	now := h.cfg.Now()
	ctx := h.eventContext(now)
	version := h.version()
	res := &Result{}
	events := make([]event.Event, 0, len(items))
	for _, it := range items {
		if it.err != nil {
			res.reject(it.line, it.index, it.err)
			continue
		}
		var item emailItem
		if err := json.Unmarshal(it.raw, &item); err != nil {
			res.reject(it.line, it.index, itemError(err))
			continue
		}
		var e event.Event
		ignored, err := h.emailEvent(&item, &ctx, &e)
		switch {
		case err != nil:
			res.reject(it.line, it.index, err)
		case ignored:
			res.Ignored++
		default:
			e.Row, e.RowVersion = event.RowID("email|"+eventID(&item)), version
			events = append(events, e)
			res.Accepted++
		}
	}
	h.accept(w, kind, events, res)
}

// itemError describes a JSON decoding error without quoting the input,
// which may hold an address.
func itemError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: want a %s", te.Field, te.Type)
	}
	if errors.Is(err, errScalar) {
		return errors.New("id, recipient and campaign: want a string or a number")
	}
	return errors.New("want a JSON object")
}

// eventID is the event's provider id: sg_event_id for SendGrid, id otherwise.
func eventID(it *emailItem) string {
	if it.sendGrid() {
		return it.SGEventID
	}
	return string(it.ID)
}

// emailEvent validates one webhook event and normalises it into e. It
// reports events of kinds Tally does not record as ignored.
func (h *Handlers) emailEvent(it *emailItem, ctx *event.Context, e *event.Event) (ignored bool, err error) {
	name := strings.ToLower(strings.TrimSpace(it.Event))
	if name == "" {
		return false, errors.New("event: required (open, click or bounce)")
	}
	typ, ok := emailTypes[name]
	if !ok {
		return true, nil
	}
	sendGrid := it.sendGrid()
	if strings.TrimSpace(eventID(it)) == "" {
		if sendGrid {
			return false, errors.New("sg_event_id: required (retried webhooks are recognised by it)")
		}
		return false, errors.New("id: required, the tool's event id (retried webhooks are recognised by it)")
	}
	ms, err := webhookTime(it.Timestamp)
	if err != nil {
		return false, err
	}
	q := urlQuery(it.URL)
	source := firstOf(it.Source, it.UTMSource, q.Get("utm_source"))
	if source == "" && sendGrid {
		source = "sendgrid"
	}
	raw := event.Raw{
		Type:     typ,
		TS:       event.Time{UnixMillis: ms, Set: true},
		Campaign: firstOf(string(it.Campaign), it.UTMCampaign, q.Get("utm_campaign"), firstCategory(it.Category)),
		Source:   source,
		Medium:   firstOf(it.Medium, it.UTMMedium, q.Get("utm_medium"), "email"),
		Country:  it.Country,
		UA:       it.UserAgent, // the opener's, for the device; never stored
		// Normalize hashes the visitor with the deployment salt; the
		// address itself goes no further than this struct.
		Visitor: firstOf(strings.ToLower(strings.TrimSpace(it.Email)), string(it.Recipient), string(it.RecipientID)),
	}
	if err := event.Normalize(&raw, ctx, e); err != nil {
		var ee *event.Error
		if errors.As(err, &ee) && ee.Field == "ts" {
			err = fmt.Errorf("timestamp: %s", ee.Reason) // the field's name here
		}
		return false, err
	}
	e.Weight = 1
	return false, nil
}

// webhookTime parses a timestamp in unix seconds (number or numeric
// string; values above 1e11 are taken as milliseconds) or RFC 3339.
func webhookTime(raw json.RawMessage) (int64, error) {
	s, ok, err := stringValue(raw)
	if err != nil || !ok || strings.TrimSpace(s) == "" {
		return 0, errors.New("timestamp: required, unix seconds or RFC 3339 (a retried event must land in the same minute)")
	}
	s = strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) || f > 1e14 {
			return 0, fmt.Errorf("timestamp: %q is out of range", s)
		}
		if f > 1e11 { // milliseconds: as seconds it would be after the year 5000
			return int64(f), nil
		}
		return int64(math.Round(f * 1000)), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("timestamp: %q is neither unix seconds nor RFC 3339", s)
	}
	return t.UnixMilli(), nil
}

func urlQuery(u string) url.Values {
	if u == "" {
		return nil
	}
	p, err := url.Parse(u)
	if err != nil {
		return nil
	}
	return p.Query()
}

// firstCategory returns the first non-empty SendGrid category: the field
// is a string or an array of strings.
func firstCategory(raw json.RawMessage) string {
	if s, ok, err := stringValue(raw); err == nil && ok {
		return s
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		for _, s := range list {
			if strings.TrimSpace(s) != "" {
				return s
			}
		}
	}
	return ""
}

func firstOf(vals ...string) string {
	for _, v := range vals {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

// SendGrid's Signed Event Webhook headers.
const (
	sendGridSignature = "X-Twilio-Email-Event-Webhook-Signature"
	sendGridTimestamp = "X-Twilio-Email-Event-Webhook-Timestamp"
)

// verifySendGrid checks SendGrid's ECDSA signature over timestamp + body.
// A replayed signed request passes, which is harmless: its events carry
// the same ids and replace themselves.
func verifySendGrid(key *ecdsa.PublicKey, hdr http.Header, body []byte) error {
	sig, ts := hdr.Get(sendGridSignature), hdr.Get(sendGridTimestamp)
	if sig == "" || ts == "" {
		return errors.New("unsigned request: imports.sendgrid_verification_key is set, so only signed SendGrid requests are accepted")
	}
	der, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return errors.New("SendGrid signature is not base64")
	}
	d := sha256.New()
	d.Write([]byte(ts))
	d.Write(body)
	if !ecdsa.VerifyASN1(key, d.Sum(nil), der) {
		return errors.New("SendGrid signature does not match the body (wrong imports.sendgrid_verification_key?)")
	}
	return nil
}
