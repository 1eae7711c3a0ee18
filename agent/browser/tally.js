// Tally browser snippet, served as GET /v1/t.js. Full-line comments and
// indentation are stripped before serving (see script.go), so write no
// template literals and keep every comment on a line of its own.
// No cookies; localStorage only with data-visitor="storage".
(function (w, d, n) {
  var s = d.currentScript;
  if (!s || w.tally) return;
  var A = function (k) { return s.getAttribute("data-" + k); };
  // The agent that served this file takes the events: .../v1/t.js -> .../v1/events.
  var E = A("endpoint") || s.src.replace(/\/t\.js([?#].*)?$/, "/events");
  var U = ["campaign", "source", "medium", "content", "term"];
  var vid;
  if (A("visitor") == "storage") {
    try {
      var S = w.localStorage;
      vid = S.getItem("tally_vid");
      if (!vid) {
        var b = new Uint8Array(16);
        w.crypto.getRandomValues(b);
        vid = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
        S.setItem("tally_vid", vid);
      }
    } catch (x) { vid = 0; }
  }
  // utm copies utm_* of a URL's query into e (first occurrence wins).
  function utm(u, e) {
    try {
      var q = new URL(u, location.href).searchParams;
      U.forEach(function (k) { var v = q.get("utm_" + k); if (v) e[k] = v; });
    } catch (x) {}
    return e;
  }
  // send posts one event as an NDJSON line. A string body makes
  // sendBeacon use text/plain;charset=UTF-8: no CORS preflight.
  function send(e) {
    var b = JSON.stringify(e) + "\n";
    try { if (n.sendBeacon && n.sendBeacon(E, b)) return true; } catch (x) {}
    try {
      fetch(E, { method: "POST", body: b, keepalive: true, credentials: "omit",
        headers: { "Content-Type": "text/plain;charset=UTF-8" } })["catch"](function () {});
      return true;
    } catch (x) { return false; }
  }
  // track sends an event of type t; fields f override the page's own.
  // The fragment stays home: it can hold tokens and is no campaign's.
  function track(t, f) {
    var u = location.href.split("#")[0], e = utm(u, { type: t, url: u });
    if (d.referrer) e.referrer = d.referrer;
    if (vid) e.visitor = vid;
    for (var k in f || {}) if (f[k] != null) e[k] = f[k];
    return send(e);
  }
  var out = A("utm-links") != null;
  d.addEventListener("click", function (ev) {
    var a = ev.target && ev.target.closest && ev.target.closest("[data-tally-click],a[href*='utm_']");
    if (!a) return;
    var f = {};
    if (!a.hasAttribute("data-tally-click")) {
      // An outbound link carrying UTM: the click belongs to its campaign
      // (parameters it lacks fall back to the page's own).
      if (!out || a.host == location.host) return;
      utm(a.href, f);
    }
    var c = a.getAttribute("data-tally-campaign"), v = parseFloat(a.getAttribute("data-tally-value"));
    if (c) f.campaign = c;
    if (v == v) f.value = v;
    track("click", f);
  }, true);
  w.tally = { track: track };
  if (A("pageview") != "manual") track("pageview");
})(window, document, navigator);
