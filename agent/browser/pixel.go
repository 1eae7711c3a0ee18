package browser

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/source"
)

// GIF is the pixel's answer: a 1×1 transparent GIF89a of 43 bytes
// (two-colour global table, graphic control extension with transparent
// index 0, one LZW-coded pixel).
var GIF = []byte{
	'G', 'I', 'F', '8', '9', 'a', 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, // header, screen 1×1, 2 colours
	0x00, 0x00, 0x00, 0xff, 0xff, 0xff, // colour table: black, white
	0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, // graphic control: index 0 is transparent
	0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, // image at 0,0, 1×1
	0x02, 0x02, 0x44, 0x01, 0x00, // LZW minimum code size 2, one sub-block, end
	0x3b, // trailer
}

// pixelFields maps query parameters to the string fields of the JSON
// contract. ip and ua are not among them: a browser fetching an image
// brings its own. cost is not either: spend does not come from images.
var pixelFields = []struct {
	param string
	field func(*event.Raw) *string
}{
	{"campaign", func(r *event.Raw) *string { return &r.Campaign }},
	{"source", func(r *event.Raw) *string { return &r.Source }},
	{"medium", func(r *event.Raw) *string { return &r.Medium }},
	{"content", func(r *event.Raw) *string { return &r.Content }},
	{"term", func(r *event.Raw) *string { return &r.Term }},
	{"visitor", func(r *event.Raw) *string { return &r.Visitor }},
	{"url", func(r *event.Raw) *string { return &r.URL }},
	{"referrer", func(r *event.Raw) *string { return &r.Referrer }},
	{"country", func(r *event.Raw) *string { return &r.Country }},
	{"device", func(r *event.Raw) *string { return &r.Device }},
	{"poll", func(r *event.Raw) *string { return &r.Poll }},
	{"answer", func(r *event.Raw) *string { return &r.Answer }},
}

// servePixel answers every request with the GIF, whatever becomes of the
// event: a broken image in an email or on a page is worse than a lost
// event, and the rejection is counted in
// tally_agent_browser_pixel_events_rejected_total{reason}. HEAD gets the
// image headers and records nothing.
func (h *Handlers) servePixel(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		h.m.pixel.Inc()
		if reason := h.record(r); reason != "" {
			h.m.rejected.WithLabelValues(reason).Inc()
		}
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "image/gif")
	hdr.Set("Content-Length", strconv.Itoa(len(GIF)))
	// Every view must reach the agent: no browser, proxy or CDN copy.
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Cross-Origin-Resource-Policy", "cross-origin")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(GIF)
	}
}

// record turns the query into one event and hands it to the sink. It
// returns the rejection reason, or "" when the event was accepted.
func (h *Handlers) record(r *http.Request) string {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return "bad_query"
	}
	var raw event.Raw
	raw.Type = q.Get("type")
	if raw.Type == "" {
		raw.Type = "impression"
	}
	if raw.Type == "cost" {
		return "type_not_allowed"
	}
	for _, f := range pixelFields {
		*f.field(&raw) = q.Get(f.param)
	}
	if raw.Referrer == "" {
		raw.Referrer = r.Referer()
	}
	if s := q.Get("ts"); s != "" {
		// The JSON decoder's rules: RFC 3339 string or unix milliseconds.
		b := []byte(strconv.Quote(s))
		if _, err := strconv.ParseFloat(s, 64); err == nil {
			b = []byte(s)
		}
		if err := raw.TS.UnmarshalJSON(b); err != nil {
			return "bad_ts"
		}
	}
	if s := q.Get("value"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return "bad_value"
		}
		raw.Value = &v
	}

	// A pixel is always a browser's (or an email client's) request.
	ctx := h.env.Request(r, h.now(), source.Browser)
	evs := []event.Event{{}}
	if err := event.Normalize(&raw, &ctx, &evs[0]); err != nil {
		var ee *event.Error
		if errors.As(err, &ee) {
			return ee.Code
		}
		return "invalid"
	}
	if err := h.sink.Accept(evs); err != nil {
		var busy *source.BusyError
		if errors.As(err, &busy) {
			return "busy"
		}
		// Not a client problem and not expected: say so once per failure,
		// as POST /v1/events does.
		h.log.Error("accepting a pixel event failed", "err", err)
		return "sink_error"
	}
	h.m.accepted.Inc()
	if b := evs[0].Bot; b != "" {
		h.m.bots.WithLabelValues(b).Inc()
	}
	return ""
}
