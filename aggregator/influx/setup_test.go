package influx

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// setupOf runs Setup for cfg and returns its SetupError (failing the test
// when Setup succeeds or fails otherwise).
func setupOf(t *testing.T, cfg Config, create bool) *SetupError {
	t.Helper()
	r, err := NewReader(cfg, nil)
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	t.Cleanup(r.Close)
	info, err := r.Setup(ctxT(t), create)
	var serr *SetupError
	if !errors.As(err, &serr) {
		t.Fatalf("Setup = %+v, %v; want a *SetupError", info, err)
	}
	return serr
}

// TestSetupLanguage runs Setup against InfluxDB 1.8 as it ships (Flux
// off): auto reads with InfluxQL; asking for Flux is refused with the
// setting and the server option to change; asking for InfluxQL works.
func TestSetupLanguage(t *testing.T) {
	cfg := freshBucketOn(t, sharedServerFlux(t, false))
	for _, lang := range []string{"", QueryAuto, QueryInfluxQL} {
		c := cfg
		c.QueryLanguage = lang
		r, err := NewReader(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		info, err := r.Setup(ctxT(t), false)
		if err != nil || info.QueryLanguage != QueryInfluxQL || !info.InfluxQL || info.Flux || r.QueryLanguage() != QueryInfluxQL {
			t.Fatalf("Setup with query language %q on 1.8 as it ships = %+v, %v; want InfluxQL", lang, info, err)
		}
		if !strings.Contains(info.String(), "reading with InfluxQL") {
			t.Fatalf("ServerInfo.String() = %q", info.String())
		}
	}
	// With Flux on as well, auto still reads with InfluxQL (the language
	// every version answers); flux is read when asked for.
	fluxOn := freshBucketOn(t, sharedServerFlux(t, true))
	for lang, want := range map[string]string{QueryAuto: QueryInfluxQL, QueryFlux: QueryFlux} {
		c := fluxOn
		c.QueryLanguage = lang
		r, err := NewReader(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if info, err := r.Setup(ctxT(t), false); err != nil || info.QueryLanguage != want || r.QueryLanguage() != want {
			t.Fatalf("Setup with query language %q where Flux is on = %+v, %v; want %s", lang, info, err, want)
		}
	}

	c := cfg
	c.QueryLanguage = QueryFlux
	serr := setupOf(t, c, false)
	if serr.Setting != SettingQueryLanguage || serr.Temporary ||
		!strings.Contains(serr.Message, "flux-enabled = true") || !strings.Contains(serr.Message, SettingQueryLanguage+": auto") {
		t.Fatalf("Setup asking for Flux where it is off = %+v; want %s named with the way out", serr, SettingQueryLanguage)
	}
}

// TestSetupUnreachable: nothing listens at the URL; the error is
// temporary (the aggregator keeps trying) and names influx.url.
func TestSetupUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	serr := setupOf(t, Config{URL: "http://" + addr, Bucket: "db/rp"}, true)
	if serr.Setting != SettingURL || !serr.Temporary || !strings.Contains(serr.Message, "cannot reach InfluxDB at http://"+addr) {
		t.Fatalf("Setup of an unreachable URL = %+v", serr)
	}
}

// fakeInflux answers /ping with the given version and /query with fn; it
// stands in for servers not installed here (2.x, 3.x) and for answers a
// real 1.8 gives only in setups the tests cannot make cheaply.
func fakeInflux(t *testing.T, version string, pingStatus int, query func(w http.ResponseWriter, q string)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ping":
			w.Header().Set("X-Influxdb-Version", version)
			w.WriteHeader(pingStatus)
		case "/query":
			query(w, r.FormValue("q"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestSetupRefusals covers the answers that need the operator, each
// naming its setting.
func TestSetupRefusals(t *testing.T) {
	okDatabases := func(w http.ResponseWriter, q string) {
		switch {
		case q == "SHOW DATABASES":
			w.Write([]byte(`{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["other"]]}]}]}`))
		case strings.HasPrefix(q, "CREATE"):
			w.Header().Set("X-Influxdb-Error", "error authorizing query: bob not authorized to execute statement 'CREATE DATABASE db', requires admin privilege")
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error":"error authorizing query: bob not authorized to execute statement 'CREATE DATABASE db', requires admin privilege"}`))
		case strings.HasPrefix(q, "SELECT"):
			w.Write([]byte(`{"results":[{"statement_id":0,"error":"database not found: db"}]}`))
		default:
			w.Write([]byte(`{"results":[{"statement_id":0}]}`))
		}
	}
	for _, tc := range []struct {
		name      string
		version   string
		ping      int
		query     func(http.ResponseWriter, string)
		create    bool
		setting   string
		temporary bool
		says      string
	}{
		{"not InfluxDB", "", http.StatusNotFound, okDatabases, true, SettingURL, false, "does not answer like InfluxDB"},
		{"wrong credentials", "1.8.10", http.StatusNoContent, func(w http.ResponseWriter, _ string) {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"authorization failed"}`))
		}, true, SettingToken, false, "authorization failed"},
		{"server error", "1.8.10", http.StatusNoContent, func(w http.ResponseWriter, _ string) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}, true, SettingURL, true, "retrying"},
		{"no admin to create", "1.8.10", http.StatusNoContent, okDatabases, true, SettingToken, false, "requires admin privilege"},
		{"creation forbidden", "1.8.10", http.StatusNoContent, okDatabases, false, SettingCreateBucket, false,
			`CREATE DATABASE "db" WITH DURATION INF NAME "rp"`},
		{"2.x bucket missing", "v2.7.11", http.StatusNoContent, okDatabases, true, SettingBucket, false, "influx bucket create --name db/rp"},
		{"3.x database missing", "3.0.1", http.StatusNoContent, okDatabases, true, SettingBucket, false, "influxdb3 create database"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := fakeInflux(t, tc.version, tc.ping, tc.query)
			serr := setupOf(t, Config{URL: url, Bucket: "db/rp", RetryInitial: 1, RetryMax: 1}, tc.create)
			if serr.Setting != tc.setting || serr.Temporary != tc.temporary || !strings.Contains(serr.Message, tc.says) ||
				!strings.Contains(serr.Message, tc.setting) {
				t.Fatalf("Setup = %+v\nwant setting %s, temporary %v, a message naming it and saying %q", serr, tc.setting, tc.temporary, tc.says)
			}
		})
	}
}

func TestGeneration(t *testing.T) {
	for v, want := range map[string]int{"1.8.10": 1, "v2.7.11": 2, "2.0.0-beta": 2, "3.0.1": 3, "3": 3, "unknown": 0, "": 0, "v": 0} {
		if got := generation(v); got != want {
			t.Fatalf("generation(%q) = %d, want %d", v, got, want)
		}
	}
}

func TestInfluxQLLiterals(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:        `'plain'`,
		`it's`:         `'it\'s'`,
		`back\slash`:   `'back\\slash'`,
		`"dq"`:         `'\"dq\"'`,
		"new\nline":    `'new\nline'`,
		`日本`:           `'日本'`,
		`\' OR 1=1 --`: `'\\\' OR 1=1 --'`,
	} {
		if got := influxQLString(in); got != want {
			t.Fatalf("influxQLString(%q) = %s, want %s", in, got, want)
		}
	}
	if got := influxQLIdent(`a"b`); got != `"a\"b"` {
		t.Fatalf("influxQLIdent = %s", got)
	}
}

// TestInfluxQLAnswersCompressedOnlyWithGzip: InfluxQL answers are asked
// for uncompressed (compressing base64 of sketches costs InfluxDB more
// than it saves on loopback or a LAN), and gzipped once Config.Gzip asks.
func TestInfluxQLAnswersCompressedOnlyWithGzip(t *testing.T) {
	for _, gz := range []bool{false, true} {
		var got []string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got = append(got, r.Header.Get("Accept-Encoding"))
			w.Write([]byte(`{"results":[{"statement_id":0}]}`))
		}))
		r, err := NewReader(Config{URL: srv.URL, Bucket: "db/rp", QueryLanguage: QueryInfluxQL, Gzip: gz}, nil)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if _, err := r.QueryMinutes(context.Background(), MinuteQuery{Campaign: "c", From: now.Add(-time.Hour), To: now}); err != nil {
			t.Fatal(err)
		}
		r.Close()
		srv.Close()
		if len(got) == 0 || strings.Contains(got[0], "gzip") != gz {
			t.Fatalf("Gzip %v: the query asked for Accept-Encoding %q", gz, got)
		}
	}
}
