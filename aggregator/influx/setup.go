package influx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ServerInfo is what Setup found out about the server.
type ServerInfo struct {
	// URL is the server's base URL.
	URL string
	// Version is what the server reports (X-Influxdb-Version on /ping):
	// "1.8.10", "v2.7.11", "3.0.1"; "unknown" for a 1.x built from source.
	Version string
	// Build is the server's build type ("OSS", "ENT", ...), when it says.
	Build string
	// Generation is the major version, 1, 2 or 3; 0 when the version does
	// not say (a source build of 1.x, which behaves as 1.x).
	Generation int
	// InfluxQL and Flux tell which query languages answered. Flux is only
	// asked when InfluxQL does not answer or Config.QueryLanguage is flux.
	InfluxQL, Flux bool
	// QueryLanguage is what the Reader reads with: QueryInfluxQL or QueryFlux.
	QueryLanguage string
	// Bucket is the bucket checked ("db/rp").
	Bucket string
	// Created says what Setup created ("" when the bucket existed).
	Created string
}

// String describes the server in one line, for logs and status pages.
func (i ServerInfo) String() string {
	lang := "InfluxQL"
	if i.QueryLanguage == QueryFlux {
		lang = "Flux"
	}
	s := fmt.Sprintf("InfluxDB %s at %s, reading with %s, bucket %q", i.versionName(), i.URL, lang, i.Bucket)
	if i.Created != "" {
		s += " (created " + i.Created + ")"
	}
	return s
}

// versionName is the version for a sentence.
func (i ServerInfo) versionName() string {
	if i.Version == "" || i.Version == "unknown" {
		return "(version unknown)"
	}
	return i.Version
}

// Settings a SetupError can name: the aggregator's configuration keys
// under influx: (README, "Aggregator configuration").
const (
	SettingURL           = "influx.url"
	SettingToken         = "influx.token"
	SettingBucket        = "influx.bucket"
	SettingQueryLanguage = "influx.query_language"
	SettingCreateBucket  = "influx.create_bucket"
)

// SetupError says why the storage cannot be used and which setting to
// change. Temporary errors (the server is unreachable or answers 5xx) may
// pass by themselves; the others need the operator.
type SetupError struct {
	// Setting names the configuration key to change (Setting* constants).
	Setting string
	// Temporary is true when retrying may help.
	Temporary bool
	// Message is the whole explanation, one sentence or two, naming
	// Setting and, where there is one, the command that fixes it by hand.
	Message string
	// Err is the underlying error, if any.
	Err error
}

// Error returns the explanation.
func (e *SetupError) Error() string { return e.Message }

// Unwrap returns the underlying error.
func (e *SetupError) Unwrap() error { return e.Err }

// Setup checks that the server the Reader was given can hold and serve
// Tally's data, and makes it so where it may:
//
//  1. reachable: /ping answers (its headers give the version);
//  2. query language: InfluxQL (SHOW DATABASES on the v1 query API) or
//     Flux, as Config.QueryLanguage asks ("auto": InfluxQL when the server
//     answers it, else Flux); the Reader reads with the one chosen;
//  3. bucket: the database and retention policy of "db/rp" exist. When
//     they do not and create is true, Setup creates them on InfluxDB 1.x
//     (CREATE DATABASE "db" WITH DURATION INF NAME "rp", or CREATE
//     RETENTION POLICY when only the policy is missing; infinite
//     duration, so nothing the aggregator still merges expires). On 2.x
//     and 3.x, buckets and databases are created with their own tools;
//  4. a read of the bucket in the chosen language succeeds.
//
// Any failure is a *SetupError naming the setting to change; a Temporary
// one (network error, 5xx) may pass, and the caller retries Setup.
func (r *Reader) Setup(ctx context.Context, create bool) (ServerInfo, error) {
	info := ServerInfo{URL: r.cfg.URL, Bucket: r.cfg.Bucket}
	fail := func(setting, format string, args ...any) (ServerInfo, error) {
		return info, setupErr(setting, format, args...)
	}
	where := "InfluxDB at " + r.cfg.URL

	// 1. Reachable, and which version.
	if err := r.pingInfo(ctx, &info); err != nil {
		var perr *PermanentError
		switch {
		case temporary(err):
			return fail(SettingURL, "cannot reach %s (check %s; retrying): %v", where, SettingURL, err)
		case errors.As(err, &perr) && (perr.StatusCode == http.StatusUnauthorized || perr.StatusCode == http.StatusForbidden):
			return fail(SettingToken, "%s refused the credentials of %s: %v", where, SettingToken, err)
		default:
			return fail(SettingURL, "%s does not answer like InfluxDB's HTTP API (is %s right?): %v", where, SettingURL, err)
		}
	}
	where = fmt.Sprintf("InfluxDB %s at %s", info.versionName(), r.cfg.URL)

	// 2. Query language.
	dbs, qlErr := r.showColumn(ctx, "SHOW DATABASES")
	if qlErr != nil {
		var perr *PermanentError
		switch {
		case temporary(qlErr):
			return fail(SettingURL, "%s failed to answer a query (check %s; retrying): %v", where, SettingURL, qlErr)
		case errors.As(qlErr, &perr) && perr.StatusCode == http.StatusUnauthorized:
			return fail(SettingToken, "%s refused the credentials of %s: %v", where, SettingToken, qlErr)
		case !languageMissing(qlErr):
			return fail(SettingToken, "%s refused to list databases for the user of %s: %v", where, SettingToken, qlErr)
		}
	}
	info.InfluxQL = qlErr == nil
	want := r.cfg.QueryLanguage
	if want == "" {
		want = QueryAuto
	}
	if want == QueryFlux || (want == QueryAuto && !info.InfluxQL) {
		fluxErr := r.probeFlux(ctx)
		switch {
		case fluxErr == nil:
			info.Flux = true
		case temporary(fluxErr):
			return fail(SettingURL, "%s failed to answer a Flux query (check %s; retrying): %v", where, SettingURL, fluxErr)
		case want == QueryFlux:
			return fail(SettingQueryLanguage, "%s does not answer Flux (%v); InfluxDB 1.8 ships with Flux off: "+
				"set %s: auto to read with InfluxQL, or set flux-enabled = true in the [http] section of its configuration",
				where, fluxErr, SettingQueryLanguage)
		default:
			return fail(SettingQueryLanguage, "%s answers neither InfluxQL (%v) nor Flux (%v): check %s and %s",
				where, qlErr, fluxErr, SettingURL, SettingQueryLanguage)
		}
	}
	switch {
	case want == QueryInfluxQL && !info.InfluxQL:
		return fail(SettingQueryLanguage, "%s does not answer InfluxQL on /query (%v): set %s: auto or flux",
			where, qlErr, SettingQueryLanguage)
	case want == QueryFlux:
		info.QueryLanguage = QueryFlux
	case info.InfluxQL:
		info.QueryLanguage = QueryInfluxQL
	default:
		info.QueryLanguage = QueryFlux
	}
	r.setLanguage(info.QueryLanguage)

	// 3. The bucket: database and retention policy.
	db, rp := splitBucket(r.cfg.Bucket)
	if db == "" {
		return fail(SettingBucket, "%s names no database: want \"database/retention-policy\" (InfluxDB 1.x), a bucket (2.x) or a database (3.x)", SettingBucket)
	}
	switch {
	case info.InfluxQL && info.Generation < 2:
		if err := r.setupInfluxQL(ctx, &info, dbs, db, rp, create, where); err != nil {
			return info, err
		}
	case info.InfluxQL:
		// 2.x maps "db/rp" to its bucket (virtual DBRP mappings), 3.x
		// reads its database: whether the mapping holds is what the read
		// below finds out.
	default:
		err := r.CheckBucket(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, ErrBucketNotFound) {
			return fail(SettingBucket, "%s has no bucket %q, and Tally creates buckets only through InfluxQL (InfluxDB 1.x): "+
				"create it (influx bucket create --name %s), or correct %s", where, r.cfg.Bucket, r.cfg.Bucket, SettingBucket)
		}
		return fail(SettingBucket, "%s: cannot check bucket %q: %v", where, r.cfg.Bucket, err)
	}

	// 4. A read in the chosen language.
	now := time.Now().Truncate(time.Minute)
	if _, err := r.QueryMinutes(ctx, MinuteQuery{Campaign: "tally-setup-probe", From: now.Add(-time.Minute), To: now, CountersOnly: true}); err != nil {
		switch {
		case temporary(err):
			return fail(SettingURL, "%s: reading bucket %q failed (check %s; retrying): %v", where, r.cfg.Bucket, SettingURL, err)
		case info.Generation == 2:
			return fail(SettingBucket, "%s: reading bucket %q with %s failed: %v; create the bucket (influx bucket create --name %s) "+
				"or correct %s (Tally creates databases only on InfluxDB 1.x)", where, r.cfg.Bucket, info.QueryLanguage, err, r.cfg.Bucket, SettingBucket)
		case info.Generation >= 3:
			return fail(SettingBucket, "%s: reading database %q with %s failed: %v; create the database (influxdb3 create database %s) "+
				"or correct %s (Tally creates databases only on InfluxDB 1.x)", where, r.cfg.Bucket, info.QueryLanguage, err, r.cfg.Bucket, SettingBucket)
		}
		return fail(SettingBucket, "%s: reading bucket %q with %s failed (check %s and %s): %v",
			where, r.cfg.Bucket, info.QueryLanguage, SettingBucket, SettingQueryLanguage, err)
	}
	return info, nil
}

// setupInfluxQL checks and, where allowed, creates the database and
// retention policy through InfluxQL.
func (r *Reader) setupInfluxQL(ctx context.Context, info *ServerInfo, dbs []string, db, rp string, create bool, where string) error {
	fail := setupErr
	dbExists := false
	for _, d := range dbs {
		dbExists = dbExists || d == db
	}
	rpExists := false
	var stmt, what, missing string
	if dbExists {
		rps, def, ok, err := r.retentionPolicies(ctx, db)
		if temporary(err) {
			return fail(SettingURL, "%s: listing the retention policies of database %q failed (check %s; retrying): %v", where, db, SettingURL, err)
		} else if err != nil {
			return fail(SettingToken, "%s: cannot list the retention policies of database %q for the user of %s: %v", where, db, SettingToken, err)
		}
		dbExists = ok
		for _, p := range rps {
			rpExists = rpExists || p == rp
		}
		if rp == "" {
			rpExists = def != ""
		}
	}
	switch {
	case dbExists && rpExists:
		return nil
	case !dbExists && rp != "":
		stmt = fmt.Sprintf("CREATE DATABASE %s WITH DURATION INF NAME %s", influxQLIdent(db), influxQLIdent(rp))
		what = fmt.Sprintf("database %q with retention policy %q", db, rp)
		missing = fmt.Sprintf("has no database %q", db)
	case !dbExists:
		stmt = "CREATE DATABASE " + influxQLIdent(db)
		what = fmt.Sprintf("database %q", db)
		missing = fmt.Sprintf("has no database %q", db)
	case rp != "":
		stmt = fmt.Sprintf("CREATE RETENTION POLICY %s ON %s DURATION INF REPLICATION 1", influxQLIdent(rp), influxQLIdent(db))
		what = fmt.Sprintf("retention policy %q on database %q", rp, db)
		missing = fmt.Sprintf("has database %q but no retention policy %q", db, rp)
	default:
		stmt = fmt.Sprintf("CREATE RETENTION POLICY \"autogen\" ON %s DURATION INF REPLICATION 1 DEFAULT", influxQLIdent(db))
		what = fmt.Sprintf("default retention policy \"autogen\" on database %q", db)
		missing = fmt.Sprintf("has database %q but no default retention policy", db)
	}
	if !create {
		return fail(SettingCreateBucket, "%s %s and %s is false: create it (%s), or set %s: true, or correct %s",
			where, missing, SettingCreateBucket, stmt, SettingCreateBucket, SettingBucket)
	}
	err := r.influxQL(ctx, http.MethodPost, stmt, "", "", 0, func(*v1Series, int64, map[string]any) error { return nil })
	if err != nil {
		if temporary(err) {
			return fail(SettingURL, "%s: creating %s failed (check %s; retrying): %v", where, what, SettingURL, err)
		}
		return fail(SettingToken, "%s %s, and it refused to create it for the user of %s: %v; "+
			"create it as an admin (%s), or give %s an admin's credentials", where, missing, SettingToken, err, stmt, SettingToken)
	}
	info.Created = what
	r.log.Info("created the InfluxDB database and retention policy", "created", what, "statement", stmt)
	return nil
}

// pingInfo asks /ping and records the version and build the server
// reports: 1.x and 2.x in the X-Influxdb-Version and X-Influxdb-Build
// headers, 3.x also as JSON {"version": ...} in the body.
func (r *Reader) pingInfo(ctx context.Context, info *ServerInfo) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.cfg.URL+"/ping", nil)
	if err != nil {
		return &PermanentError{Err: err}
	}
	req.Header.Set("User-Agent", "tally-aggregator")
	if r.cfg.Token != "" {
		req.Header.Set("Authorization", "Token "+r.cfg.Token)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return &RetryableError{Err: fmt.Errorf("%w (%v)", ctx.Err(), err)}
		}
		return &RetryableError{Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return httpStatusError(resp)
	}
	info.Version = resp.Header.Get("X-Influxdb-Version")
	info.Build = resp.Header.Get("X-Influxdb-Build")
	if info.Version == "" {
		var body struct {
			Version string `json:"version"`
		}
		if b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10)); err == nil && json.Unmarshal(b, &body) == nil {
			info.Version = body.Version
		}
	}
	if info.Version == "" {
		info.Version = "unknown"
	}
	info.Generation = generation(info.Version)
	return nil
}

// generation is the major version of a version string ("1.8.10",
// "v2.7.11", "3.0.1-nightly"), or 0 when it has none.
func generation(version string) int {
	v := strings.TrimPrefix(strings.TrimSpace(version), "v")
	if i := strings.IndexByte(v, '.'); i > 0 {
		v = v[:i]
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0
	}
	return n
}

// setupErr builds a *SetupError from a message; the last error among
// args is its cause and decides whether it is Temporary.
func setupErr(setting, format string, args ...any) *SetupError {
	var cause error
	for _, a := range args {
		if e, ok := a.(error); ok {
			cause = e
		}
	}
	return &SetupError{Setting: setting, Temporary: temporary(cause), Message: fmt.Sprintf(format, args...), Err: cause}
}

// temporary reports whether err may pass by itself.
func temporary(err error) bool {
	if err == nil {
		return false
	}
	var rerr *RetryableError
	return errors.As(err, &rerr) || errors.Is(err, context.DeadlineExceeded)
}
