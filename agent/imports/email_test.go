package imports

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

// emailRow is what one webhook event became, for comparisons.
type emailRow struct {
	typ, campaign, source, medium, device string
	ms                                    int64
	visitor                               uint64
	row                                   uint64
}

func emailRows(evs []event.Event) []emailRow {
	var out []emailRow
	for _, e := range evs {
		s := e.Series
		out = append(out, emailRow{s.Type, s.Campaign, s.Source, s.Medium, s.Device, e.UnixMillis, e.Visitor, e.Row})
	}
	return out
}

func TestSendGridWebhook(t *testing.T) {
	f := newFixture(t, nil)
	w, res := post(t, f.h.EmailWebhook(), EmailWebhookPath, readFixture(t, "sendgrid/events.json"), "Content-Type", "application/json")
	if w.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if res.Accepted != 4 || res.Rejected != 0 || res.Ignored != 5 || res.Events != 4 {
		t.Fatalf("result %+v", res)
	}
	visitor := func(ms int64, email string) uint64 { return f.hasher.Visitor(ms, email) }
	const open, click, bounce, dropped = 1795338000_000, 1795338060_000, 1795334410_000, 1795334411_000
	want := []emailRow{
		// The campaign custom argument; the address lower-cased before
		// hashing; sg_event_id, not the custom argument "id", is the key.
		{"email_open", "black_friday", "sendgrid", "email", "mobile", open, visitor(open, "alice@example.com"), event.RowID("email|b3Blbi0wMDE")},
		// No custom argument: utm_* of the clicked URL.
		{"email_click", "black_friday", "newsletter", "email", "desktop", click, visitor(click, "bob@example.org"), event.RowID("email|Y2xpY2stMDAx")},
		// Neither: the first category (an array here, a string below).
		{"bounce", "winter_sale", "sendgrid", "email", "unknown", bounce, visitor(bounce, "carol@example.net"), event.RowID("email|Ym91bmNlLTAwMQ")},
		{"bounce", "winter_sale", "sendgrid", "email", "unknown", dropped, visitor(dropped, "dave@example.com"), event.RowID("email|ZHJvcHBlZC0wMDE")},
	}
	evs := f.sink.last()
	if got := emailRows(evs); !slices.Equal(got, want) {
		t.Fatalf("events\n got %+v\nwant %+v", got, want)
	}
	for _, e := range evs {
		if e.Weight != 1 || e.RowVersion != uint64(testNow.UnixMilli()) || e.Bot != "" || e.Series.Region != "eu" || e.Series.Country != "ZZ" {
			t.Errorf("event %+v", e)
		}
	}
	if n := counter(t, f.h.rows, "email", "ignored"); n != 5 {
		t.Errorf("rows{email,ignored} = %v", n)
	}
	if n := counter(t, f.h.rows, "email", "accepted"); n != 4 {
		t.Errorf("rows{email,accepted} = %v", n)
	}

	// SendGrid retries a batch it got no 2xx for: the same ids come again
	// with a higher version, so they replace instead of adding.
	*f.clock = testNow.Add(10 * time.Minute)
	post(t, f.h.EmailWebhook(), EmailWebhookPath, readFixture(t, "sendgrid/events.json"))
	retry := f.sink.last()
	for i := range evs {
		if retry[i].Row != evs[i].Row || retry[i].Key() != evs[i].Key() || retry[i].RowVersion <= evs[i].RowVersion {
			t.Fatalf("retry of event %d: %+v then %+v", i, evs[i], retry[i])
		}
	}
}

func TestGenericWebhook(t *testing.T) {
	f := newFixture(t, nil)
	w, res := post(t, f.h.EmailWebhook(), EmailWebhookPath, readFixture(t, "generic/events.ndjson"))
	if w.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	const nine, bounceMs = 1795338000_000, 1795338000_123
	want := []emailRow{
		{"email_open", "spring_sale", "mailchimp", "email", "unknown", nine, f.hasher.Visitor(nine, "x@example.com"), event.RowID("email|evt-1")},
		// A recipient id instead of an address; a numeric id; utm_medium
		// from the URL.
		{"email_click", "spring_sale", "(direct)", "newsletter", "unknown", nine, f.hasher.Visitor(nine, "subscriber-42"), event.RowID("email|17")},
		// A timestamp in milliseconds.
		{"bounce", "spring_sale", "(direct)", "email", "unknown", bounceMs, f.hasher.Visitor(bounceMs, "y@example.com"), event.RowID("email|evt-3")},
	}
	if got := emailRows(f.sink.last()); !slices.Equal(got, want) {
		t.Fatalf("events\n got %+v\nwant %+v", got, want)
	}
	wantErrs := []RowError{
		{5, 4, "id: required, the tool's event id (retried webhooks are recognised by it)"},
		{6, 5, "timestamp: required, unix seconds or RFC 3339 (a retried event must land in the same minute)"},
		{7, 6, "event: required (open, click or bounce)"},
		{8, 7, "email: want a string"},
		{9, 8, "malformed JSON"},
	}
	if res.Accepted != 3 || res.Ignored != 1 || !slices.Equal(res.Errors, wantErrs) {
		t.Fatalf("result %+v\nwant errors %+v", res, wantErrs)
	}
	if strings.Contains(w.Body.String(), "@") {
		t.Fatalf("the answer quotes an address: %s", w.Body)
	}
	// Too new for the clock: named by this format's field.
	_, res = post(t, f.h.EmailWebhook(), EmailWebhookPath, []byte(`{"event":"open","id":"x","timestamp":"2026-11-22T13:00:00Z"}`))
	if len(res.Errors) != 1 || res.Errors[0].Error != "timestamp: more than 5m0s in the future" {
		t.Fatalf("future event: %+v", res)
	}
	// Duplicates within one body are one event too: the same row.
	body := `{"event":"open","campaign":"c","email":"a@example.com","timestamp":1795338000,"id":"dup"}` + "\n" +
		`{"event":"open","campaign":"c","email":"a@example.com","timestamp":1795338000,"id":"dup"}`
	_, res = post(t, f.h.EmailWebhook(), EmailWebhookPath, []byte(body))
	if evs := f.sink.last(); res.Accepted != 2 || len(evs) != 2 || evs[0].Row != evs[1].Row || evs[0].Key() != evs[1].Key() {
		t.Fatalf("duplicates: %+v %+v", res, evs)
	}
	// A single object, pretty-printed.
	_, res = post(t, f.h.EmailWebhook(), EmailWebhookPath, []byte("{\n  \"event\": \"click\",\n  \"id\": \"one\",\n  \"timestamp\": 1795338000\n}\n"))
	if res.Accepted != 1 {
		t.Fatalf("single object: %+v", res)
	}
}

func TestWebhookToken(t *testing.T) {
	const token = "s3cret-webhook-token-0123"
	f := newFixture(t, func(c *Config) { c.WebhookToken = token })
	body := readFixture(t, "sendgrid/events.json")
	for _, tc := range []struct {
		name, target string
		hdr          []string
		code         int
	}{
		{"none", EmailWebhookPath, []string{"Authorization", ""}, 401},
		{"wrong bearer", EmailWebhookPath, []string{"Authorization", "Bearer nope"}, 401},
		{"basic", EmailWebhookPath, []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+token))}, 401},
		{"wrong query", EmailWebhookPath + "?token=nope", []string{"Authorization", ""}, 401},
		{"bearer", EmailWebhookPath, []string{"Authorization", "Bearer " + token}, 202},
		{"bearer, any case", EmailWebhookPath, []string{"Authorization", "bearer " + token}, 202},
		{"query", EmailWebhookPath + "?token=" + token, []string{"Authorization", ""}, 202},
		{"server sender's token", EmailWebhookPath, nil, 202},
		{"server token in the query", EmailWebhookPath + "?token=" + testToken, []string{"Authorization", ""}, 202},
	} {
		w, _ := post(t, f.h.EmailWebhook(), tc.target, body, tc.hdr...)
		if w.Code != tc.code {
			t.Errorf("%s: status %d, want %d: %s", tc.name, w.Code, tc.code, w.Body)
		}
		if w.Code == 401 && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
		}
	}
	if n := counter(t, f.h.requests, "email", "401"); n != 4 {
		t.Errorf("requests{email,401} = %v", n)
	}
	// The webhook token opens the webhook only: a report takes a server
	// sender's token.
	if w, _ := post(t, f.h.Cost(), CostPath, readFixture(t, "cost_google_ads/report.csv"), "Authorization", "Bearer "+token); w.Code != 401 {
		t.Errorf("cost import with the webhook token: %d", w.Code)
	}
}

func TestSendGridSignature(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *Config) { c.SendGridVerificationKey = base64.StdEncoding.EncodeToString(der) })
	body := readFixture(t, "sendgrid/events.json")
	sign := func(ts string, b []byte) string {
		sum := sha256.Sum256(append([]byte(ts), b...))
		sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(sig)
	}
	const ts = "1795338100"
	good := sign(ts, body)
	for _, tc := range []struct {
		name string
		body []byte
		hdr  []string
		code int
	}{
		{"signed", body, []string{sendGridSignature, good, sendGridTimestamp, ts}, 202},
		{"unsigned", body, nil, 401},
		{"other timestamp", body, []string{sendGridSignature, good, sendGridTimestamp, "1795338101"}, 401},
		{"tampered body", append([]byte(" "), body...), []string{sendGridSignature, good, sendGridTimestamp, ts}, 401},
		{"garbage signature", body, []string{sendGridSignature, "!!", sendGridTimestamp, ts}, 401},
	} {
		w, _ := post(t, f.h.EmailWebhook(), EmailWebhookPath, tc.body, tc.hdr...)
		if w.Code != tc.code {
			t.Errorf("%s: status %d, want %d: %s", tc.name, w.Code, tc.code, w.Body)
		}
	}
	// PEM armour, as some consoles show the key, is accepted too.
	pem := "-----BEGIN PUBLIC KEY-----\n" + base64.StdEncoding.EncodeToString(der) + "\n-----END PUBLIC KEY-----\n"
	if _, err := parseECDSAKey(pem); err != nil {
		t.Fatal(err)
	}
}

func TestWebhookTime(t *testing.T) {
	for in, want := range map[string]int64{
		`1795338000`:                    1795338000_000,
		`"1795338000"`:                  1795338000_000,
		`1795338000.25`:                 1795338000_250,
		`1795338000123`:                 1795338000_123,
		`"2026-11-22T09:00:00Z"`:        1795338000_000,
		`"2026-11-22T10:00:00.5+01:00"`: 1795338000_500,
	} {
		got, err := webhookTime([]byte(in))
		if err != nil || got != want {
			t.Errorf("webhookTime(%s) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{``, `null`, `""`, `-5`, `"yesterday"`, `true`, `1e300`} {
		if got, err := webhookTime([]byte(in)); err == nil {
			t.Errorf("webhookTime(%s) = %d, want an error", in, got)
		}
	}
}

// FuzzEmailWebhook: no body makes the webhook panic or answer outside its
// contract, and nothing a row says is counted more than once.
//
//	go test -run='^$' -fuzz='^FuzzEmailWebhook$' -fuzztime=30s ./agent/imports/
func FuzzEmailWebhook(f *testing.F) {
	f.Add(readFixture(f, "sendgrid/events.json"))
	for _, s := range []string{`{"event":"open","id":"1","email":"a@b.example","timestamp":1700000000,"campaign":"c"}`,
		"[{\"event\":\"click\",\"id\":2}]\n", "{\"event\":\"bounce\"}\n{", `[{"sg_event_id":"x","event":"open","timestamp":"x"}]`} {
		f.Add([]byte(s))
	}
	fx := newFixture(f, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		fx.sink.batches = nil
		w, res := post(t, fx.h.EmailWebhook(), EmailWebhookPath, body)
		switch w.Code {
		case http.StatusAccepted:
			if res.Events != res.Accepted {
				t.Fatalf("%d events from %d accepted rows", res.Events, res.Accepted)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	})
}
