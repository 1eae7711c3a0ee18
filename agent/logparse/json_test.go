package logparse

import (
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
)

func TestParseJSON(t *testing.T) {
	march := ms(time.Date(2024, 3, 10, 12, 55, 36, 0, time.UTC))
	defaults := []parseCase{
		{name: "nginx escape=json",
			line: `{"time":"2024-03-10T13:55:36+01:00","remote_addr":"203.0.113.9","request":"GET /p?utm_source=nl&utm_campaign=spring%20sale HTTP/2.0","status":"200","body_bytes_sent":"512","http_referer":"https:\/\/www.google.com\/","http_user_agent":"Mozilla \"q\" \u00e9 \ud83d\ude00","x_forwarded_for":""}`,
			want: event.Raw{Type: "pageview", TS: march, IP: "203.0.113.9", UA: `Mozilla "q" é 😀`, Referrer: "https://www.google.com/",
				Source: "nl", Campaign: "spring sale", URL: "/p?utm_source=nl&utm_campaign=spring%20sale"}},
		{name: "numbers, nested values, other order, whitespace",
			line: ` { "status" : 302 , "upstream":{"a":[1,{"b":"]}"}],"c":null}, "msec": 1710075336.25, "ua":"x","request":"GET /click?utm_medium=cpc HTTP/1.1" , "remote_addr":"::1"} `,
			want: event.Raw{Type: "click", TS: event.Time{UnixMillis: 1710075336250, Set: true}, IP: "::1", UA: "x", Medium: "cpc",
				URL: "/click?utm_medium=cpc"}},
		{name: "method, uri and args; unix ms; first key of a role wins",
			line: `{"ts":1710075336000,"time":"garbage","method":"GET","uri":"/landing","args":"utm_term=a+b","status":200,"http_host":"shop.example.com","scheme":"http"}`,
			want: event.Raw{Type: "pageview", TS: march, Term: "a b", URL: "http://shop.example.com/landing?utm_term=a+b"}},
		{name: "uri holding the query", line: `{"time":"10/Mar/2024:13:55:36 +0100","method":"GET","uri":"/a?utm_source=s","status":200}`,
			want: event.Raw{Type: "pageview", TS: march, Source: "s", URL: "/a?utm_source=s"}},
		{name: "null is absent", line: `{"time":"2024-03-10T12:55:36Z","request":"GET / HTTP/1.1","status":200,"http_user_agent":null,"ua":"second"}`,
			want: event.Raw{Type: "pageview", TS: march, UA: "second", URL: "/"}},
		{name: "no method: default rule refuses", line: `{"time":"2024-03-10T12:55:36Z","uri":"/","status":200}`, reason: SkipMethod},
		{name: "asset", line: `{"time":"2024-03-10T12:55:36Z","request":"GET /a.js HTTP/1.1","status":200}`, reason: SkipAsset},
		{name: "array", line: `[1,2]`, reason: CodeBadJSON},
		{name: "not json", line: `192.0.2.1 - - [10/Mar/2024:13:55:36 +0100] "GET / HTTP/1.1" 200 1`, reason: CodeBadJSON},
		{name: "trailing text", line: `{"time":"2024-03-10T12:55:36Z","request":"GET / HTTP/1.1","status":200} x`, reason: CodeBadJSON},
		{name: "unterminated", line: `{"time":"2024-03-10T12:55:36Z","request":"GET / HTTP/1.1","status":200`, reason: CodeBadJSON},
		{name: "unterminated string", line: `{"time":"2024-03-10T12:55:36Z","request":"GET / HTTP/1.1}`, reason: CodeBadJSON},
		{name: "bad escape", line: `{"time":"2024-03-10T12:55:36Z","request":"GET /\q HTTP/1.1","status":200}`, reason: CodeBadJSON},
		{name: "bad number", line: `{"time":"2024-03-10T12:55:36Z","request":"GET / HTTP/1.1","status":0200}`, reason: CodeBadJSON},
		{name: "trailing comma", line: `{"time":"2024-03-10T12:55:36Z","request":"GET / HTTP/1.1","status":200,}`, reason: CodeBadJSON},
		{name: "mapped object", line: `{"time":"2024-03-10T12:55:36Z","request":{"m":"GET"},"status":200}`, reason: CodeBadJSON},
		{name: "unbalanced nested", line: `{"x":[1,2},"time":"2024-03-10T12:55:36Z","request":"GET / HTTP/1.1","status":200}`, reason: CodeBadJSON},
		{name: "no time", line: `{"request":"GET / HTTP/1.1","status":200}`, reason: CodeBadTime},
		{name: "no status", line: `{"time":"2024-03-10T12:55:36Z","request":"GET / HTTP/1.1"}`, reason: CodeBadStatus},
		{name: "no request", line: `{"time":"2024-03-10T12:55:36Z","status":200}`, reason: CodeBadRequest},
		{name: "empty object", line: `{}`, reason: CodeBadTime},
	}
	runCases(t, mustCompile(t, specOf(FormatJSON)), defaults)

	s := specOf(FormatJSON)
	s.JSONFields = map[string]string{"time": "@t", "remote_addr": "client", "http_user_agent": "agent", "request": "req"}
	custom := []parseCase{
		{name: "custom keys", line: `{"@t":"2024-03-10T12:55:36Z","client":"192.0.2.1","agent":"A","req":"GET / HTTP/1.1","status":200,"time":"ignored","remote_addr":"ignored"}`,
			want: event.Raw{Type: "pageview", TS: march, IP: "192.0.2.1", UA: "A", URL: "/"}},
		{name: "default key of a remapped role is ignored", line: `{"time":"2024-03-10T12:55:36Z","request":"GET / HTTP/1.1","status":200}`, reason: CodeBadTime},
	}
	runCases(t, mustCompile(t, s), custom)
}

func TestJSONFieldsErrors(t *testing.T) {
	for _, tc := range []struct {
		fields map[string]string
		want   string
	}{
		{map[string]string{"tim": "t"}, `json_fields: unknown role "tim" (want one of time, remote_addr,`},
		{map[string]string{"time": ""}, "json_fields: time: empty key"},
		{map[string]string{"time": "t", "status": "t"}, `json_fields: status and time: both mapped to key "t"`},
	} {
		s := specOf(FormatJSON)
		s.JSONFields = tc.fields
		if _, err := Compile(s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Compile(json_fields %v) = %v, want %q", tc.fields, err, tc.want)
		}
	}
	if len(DefaultJSONFields()["time"]) == 0 {
		t.Fatal("DefaultJSONFields has no time keys")
	}
}
