package browser

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// CORS wraps the POST /v1/events handler with the cross-origin policy of
// Config.AllowedOrigins:
//
//   - no Origin header (servers, curl), or the agent's own host: passed
//     through untouched;
//   - an allowed origin: Access-Control-Allow-Origin echoes it (never "*",
//     since sendBeacon sends credentials) and a preflight (OPTIONS with
//     Access-Control-Request-Method) is answered 204 here with
//     Allow-Methods POST, Allow-Headers Content-Type and Max-Age;
//   - any other origin: no CORS headers, counted as denied; a preflight
//     gets 403, a POST is passed through (the browser hides the answer
//     from the page) or, with EnforceOrigins, refused with 403.
//
// The script's beacons are CORS "simple" requests (POST, text/plain), so
// browsers send them without a preflight: the preflight path serves other
// clients, such as pages posting application/json themselves.
func (h *Handlers) CORS(next http.Handler) http.Handler {
	maxAge := strconv.Itoa(int(h.cfg.PreflightMaxAge / time.Second))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		hdr := w.Header()
		hdr.Add("Vary", "Origin")
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if !preflight && sameHost(origin, r.Host) {
			next.ServeHTTP(w, r)
			return
		}
		kind := "request"
		if preflight {
			kind = "preflight"
		}
		if !h.origins.match(origin) {
			h.m.cors.WithLabelValues(kind, "denied").Inc()
			switch {
			case preflight:
				w.WriteHeader(http.StatusForbidden)
			case h.cfg.EnforceOrigins:
				http.Error(w, "origin not allowed (browser.allowed_origins)", http.StatusForbidden)
			default:
				next.ServeHTTP(w, r)
			}
			return
		}
		h.m.cors.WithLabelValues(kind, "allowed").Inc()
		hdr.Set("Access-Control-Allow-Origin", origin)
		hdr.Set("Access-Control-Allow-Credentials", "true")
		if !preflight {
			next.ServeHTTP(w, r)
			return
		}
		hdr.Add("Vary", "Access-Control-Request-Method")
		hdr.Add("Vary", "Access-Control-Request-Headers")
		hdr.Set("Access-Control-Allow-Methods", http.MethodPost)
		hdr.Set("Access-Control-Allow-Headers", "Content-Type")
		hdr.Set("Access-Control-Max-Age", maxAge)
		w.WriteHeader(http.StatusNoContent)
	})
}

// sameHost reports whether origin names the host the request was sent to:
// a site that proxies the agent under its own domain needs no CORS.
func sameHost(origin, host string) bool {
	_, rest, ok := strings.Cut(origin, "://")
	return ok && host != "" && strings.EqualFold(rest, host)
}

// origins is a parsed AllowedOrigins list.
type origins struct {
	// exact holds canonical origins: lower case, default port dropped.
	exact map[string]struct{}
	wild  []wildcard
}

// wildcard is a "scheme://*.suffix[:port]" pattern.
type wildcard struct {
	scheme string
	suffix string // ".example.org"
	port   string // "" for the scheme's default
}

// parseOrigins parses patterns, naming every bad one in the error.
func parseOrigins(patterns []string) (origins, error) {
	o := origins{exact: map[string]struct{}{}}
	var errs []error
	for _, p := range patterns {
		scheme, host, port, err := splitOrigin(strings.ToLower(strings.TrimSpace(p)))
		if err == nil {
			if suffix, ok := strings.CutPrefix(host, "*."); ok {
				switch {
				case strings.Contains(suffix, "*"):
					err = errors.New(`"*" is only allowed as the first label ("https://*.example.org")`)
				case !validHostname(suffix) || !strings.Contains(suffix, "."):
					err = errors.New(`a wildcard needs a domain of at least two labels after "*."`)
				default:
					o.wild = append(o.wild, wildcard{scheme: scheme, suffix: "." + suffix, port: port})
					continue
				}
			} else if strings.Contains(host, "*") {
				err = errors.New(`"*" is only allowed as the first label ("https://*.example.org"); list origins instead of allowing all`)
			} else if !validHost(host) {
				err = fmt.Errorf("%q is not a host name or IP address", host)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("browser.allowed_origins %q: %w", p, err))
			continue
		}
		o.exact[canonical(scheme, host, port)] = struct{}{}
	}
	return o, errors.Join(errs...)
}

// splitOrigin splits "scheme://host[:port]", checks the scheme and the
// port, and drops a port that is the scheme's default (browsers omit it
// in the Origin header).
func splitOrigin(s string) (scheme, host, port string, err error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || (scheme != "http" && scheme != "https") {
		return "", "", "", errors.New("want http://host[:port] or https://host[:port]")
	}
	if strings.ContainsAny(rest, "/?#@") {
		return "", "", "", errors.New("an origin has no path, query or user: want scheme://host[:port], without a trailing slash")
	}
	host = rest
	if strings.HasPrefix(rest, "[") { // [IPv6]:port
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return "", "", "", errors.New("unclosed '[' in an IPv6 address")
		}
		host, rest = rest[:end+1], rest[end+1:]
		if rest != "" && rest[0] != ':' {
			return "", "", "", errors.New("want [IPv6]:port")
		}
		port = strings.TrimPrefix(rest, ":")
	} else if h, p, ok := strings.Cut(rest, ":"); ok {
		host, port = h, p
	}
	if port != "" {
		n, perr := strconv.Atoi(port)
		if perr != nil || n < 1 || n > 65535 || port[0] == '0' {
			return "", "", "", fmt.Errorf("port %q: want 1-65535", port)
		}
		if (scheme == "http" && n == 80) || (scheme == "https" && n == 443) {
			port = ""
		}
	}
	if host == "" {
		return "", "", "", errors.New("empty host")
	}
	return scheme, host, port, nil
}

func canonical(scheme, host, port string) string {
	if port == "" {
		return scheme + "://" + host
	}
	return scheme + "://" + host + ":" + port
}

// match reports whether a browser's Origin header value is allowed.
func (o *origins) match(origin string) bool {
	if len(o.exact) == 0 && len(o.wild) == 0 {
		return false
	}
	scheme, host, port, err := splitOrigin(strings.ToLower(origin))
	if err != nil {
		return false // includes "null" (sandboxed frames, file:)
	}
	if _, ok := o.exact[canonical(scheme, host, port)]; ok {
		return true
	}
	for _, w := range o.wild {
		if w.scheme == scheme && w.port == port && len(host) > len(w.suffix) &&
			strings.HasSuffix(host, w.suffix) && validHostname(host[:len(host)-len(w.suffix)]) {
			return true
		}
	}
	return false
}

func validHost(h string) bool {
	if strings.HasPrefix(h, "[") {
		a, err := netip.ParseAddr(strings.Trim(h, "[]"))
		return err == nil && a.Is6()
	}
	return validHostname(h)
}

// validHostname checks dot-separated labels of letters, digits and '-'
// (IPv4 addresses pass too).
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || 'A' <= c && c <= 'Z') {
				return false
			}
		}
	}
	return true
}
