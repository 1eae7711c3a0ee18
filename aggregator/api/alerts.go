package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
	"github.com/tally-edge/tally/aggregator/alerting"
	"github.com/tally-edge/tally/aggregator/auth"
)

// AlertService is what the alert and forecast routes ask
// (alerting.Service): alerts and forecasts from storage, and the alerting
// objects in force.
type AlertService interface {
	Alerts(ctx context.Context, q alerting.AlertQuery) (alerting.AlertList, error)
	Objects() alerting.ObjectsView
	PutObject(ctx context.Context, obj any, by string) error
	DeleteObject(ctx context.Context, kind, name, by string) error
	Forecast(ctx context.Context, campaign string, now time.Time) (alerting.Forecast, error)
}

// Parameters of the alert routes.
const (
	pState = "state"
	pLimit = "limit"
)

// maxObjectBody bounds the body of an edit of an alerting object.
const maxObjectBody = 64 << 10

// errNoAlerting answers 503 when the node has no alerting service.
var errNoAlerting = errors.New("alerting is not available on this node")

// alertRoutes registers the alert, alerting object and forecast routes:
// everyone sees the alerts and forecasts of the campaigns in their scope,
// admins and analysts read the rules, budgets and silences, admins change
// them.
func (s *Server) alertRoutes() {
	all := auth.AllRoles
	admins := []auth.Role{auth.Admin}
	s.route(Route{Method: "GET", Path: "/api/v1/alerts", Name: "alerts", Roles: all,
		Params: alertsParams, Query: true}, s.alerts)
	s.route(Route{Method: "GET", Path: "/api/v1/alerts/config", Name: "alerts_config", Roles: AlertConfigRoles}, s.alertObjects)
	for _, kind := range []string{alerting.KindRule, alerting.KindBudget, alerting.KindSilence} {
		path := "/api/v1/alerts/" + kind + "s/{name}"
		s.route(Route{Method: "PUT", Path: path, Name: "alerts_" + kind + "_put", Roles: admins}, s.putAlertObject(kind))
		s.route(Route{Method: "DELETE", Path: path, Name: "alerts_" + kind + "_delete", Roles: admins}, s.deleteAlertObject(kind))
	}
	s.route(Route{Method: "GET", Path: "/api/v1/forecast", Name: "forecast", Roles: all, Params: forecastParams, Query: true}, s.forecast)
}

// alertsParams are the parameters of GET /api/v1/alerts; forecastParams
// those of GET /api/v1/forecast. The answer functions check their
// arguments against them too, so GraphQL's arguments meet REST's bounds.
var (
	alertsParams   = []string{pCampaign, pFrom, pTo, pState, pLimit}
	forecastParams = []string{pCampaign}
)

// AlertConfigRoles may read the alerting objects (GET
// /api/v1/alerts/config): admins and analysts.
var AlertConfigRoles = []auth.Role{auth.Admin, auth.Analyst}

// errRole answers 403 for a caller whose role may not read an answer.
type errRole struct {
	role  auth.Role
	route string
}

func (e errRole) Error() string { return "role " + string(e.role) + " may not use " + e.route }

// alerts serves GET /api/v1/alerts.
func (s *Server) alerts(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	list, err := s.Alerts(r.Context(), p, r.URL.Query())
	if err != nil {
		return err
	}
	return writeJSON(w, list)
}

// Alerts answers GET /api/v1/alerts for p, args being the route's query
// parameters: the alerts that started in the range (default the last 24
// hours), each as its latest transition, newest first, of the campaign
// asked for (403 outside p's scope) or of every campaign in p's scope.
func (s *Server) Alerts(ctx context.Context, p *auth.Principal, args url.Values) (alerting.AlertList, error) {
	if s.cfg.Alerts == nil {
		return alerting.AlertList{}, errNoAlerting
	}
	if err := checkParams(args, alertsParams); err != nil {
		return alerting.AlertList{}, err
	}
	var aq alerting.AlertQuery
	var err error
	now := s.now()
	if aq.To, err = parseTime(args.Get(pTo), now.Add(time.Minute)); err != nil {
		return alerting.AlertList{}, badParam(pTo, "%v", err)
	}
	if aq.From, err = parseTime(args.Get(pFrom), aq.To.Add(-24*time.Hour)); err != nil {
		return alerting.AlertList{}, badParam(pFrom, "%v", err)
	}
	if !aq.From.Before(aq.To) || aq.To.Sub(aq.From) > alerting.MaxAlertSpan {
		return alerting.AlertList{}, badParam(pFrom, "must be before to, at most %s apart", alerting.MaxAlertSpan)
	}
	switch aq.State = args.Get(pState); aq.State {
	case "", alert.StateFiring, alert.StateResolved:
	default:
		return alerting.AlertList{}, badParam(pState, "want firing or resolved")
	}
	if v := args.Get(pLimit); v != "" {
		if aq.Limit, err = strconv.Atoi(v); err != nil || aq.Limit < 1 || aq.Limit > 1000 {
			return alerting.AlertList{}, badParam(pLimit, "want 1 to 1000")
		}
	}
	switch c := args.Get(pCampaign); {
	case args.Has(pCampaign) && c == "":
		return alerting.AlertList{}, badParam(pCampaign, "empty")
	case c != "":
		if !p.CanSee(c) {
			return alerting.AlertList{}, errForbidden{c}
		}
		aq.Campaigns = []string{c}
		auth.NoteCampaignsContext(ctx, c)
	case p.AllCampaigns():
		aq.All = true
		auth.NoteCampaignsContext(ctx, "*")
	default:
		aq.Campaigns = p.Campaigns
		auth.NoteCampaignsContext(ctx, p.Campaigns...)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	return s.cfg.Alerts.Alerts(ctx, aq)
}

// alertObjects serves GET /api/v1/alerts/config.
func (s *Server) alertObjects(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	v, err := s.AlertConfig(r.Context(), p, r.URL.Query())
	if err != nil {
		return err
	}
	return writeJSON(w, v)
}

// AlertConfig answers GET /api/v1/alerts/config for p: every rule, budget
// and silence in force, each with where it comes from. Only the roles of
// AlertConfigRoles may read them (403); the route takes no parameters.
func (s *Server) AlertConfig(_ context.Context, p *auth.Principal, args url.Values) (alerting.ObjectsView, error) {
	if !p.Allowed(AlertConfigRoles) {
		return alerting.ObjectsView{}, errRole{p.Role, "alerts_config"}
	}
	if s.cfg.Alerts == nil {
		return alerting.ObjectsView{}, errNoAlerting
	}
	if err := checkParams(args, nil); err != nil {
		return alerting.ObjectsView{}, err
	}
	return s.cfg.Alerts.Objects(), nil
}

// putAlertObject serves PUT /api/v1/alerts/{rules|budgets|silences}/{name}:
// the body is the object (strict JSON); its name (a budget's campaign, a
// silence's id), when given, must be the path's.
func (s *Server) putAlertObject(kind string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
		if s.cfg.Alerts == nil {
			return errNoAlerting
		}
		name := r.PathValue("name")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(10 * time.Second))
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxObjectBody))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				return &requestError{fmt.Sprintf("larger than %d bytes", maxObjectBody)}
			}
			return &requestError{"reading the body: " + err.Error()}
		}
		var obj any
		mismatch := func(got string) error {
			if got != "" && got != name {
				return &requestError{fmt.Sprintf("the body names %q, the path %q", got, name)}
			}
			return nil
		}
		switch kind {
		case alerting.KindRule:
			var v alert.Rule
			if err := json.Unmarshal(body, &v); err != nil {
				return &requestError{"want a rule as JSON: " + err.Error()}
			}
			if err := mismatch(v.Name); err != nil {
				return err
			}
			v.Name = name
			auth.NoteCampaigns(r, v.Campaigns...)
			obj = v
		case alerting.KindBudget:
			var v alert.Budget
			if err := json.Unmarshal(body, &v); err != nil {
				return &requestError{"want a budget as JSON: " + err.Error()}
			}
			if err := mismatch(v.Campaign); err != nil {
				return err
			}
			v.Campaign = name
			auth.NoteCampaigns(r, name)
			obj = v
		case alerting.KindSilence:
			var v alert.Silence
			if err := json.Unmarshal(body, &v); err != nil {
				return &requestError{"want a silence as JSON: " + err.Error()}
			}
			if err := mismatch(v.ID); err != nil {
				return err
			}
			v.ID = name
			if v.Campaign != "" {
				auth.NoteCampaigns(r, v.Campaign)
			}
			obj = v
		}
		auth.NoteOutcome(r, kind+"_put")
		if err := s.cfg.Alerts.PutObject(r.Context(), obj, p.Subject); err != nil {
			return err
		}
		return writeJSON(w, map[string]any{"kind": kind, "name": name, "object": obj})
	}
}

// deleteAlertObject serves DELETE /api/v1/alerts/{kind}s/{name}.
func (s *Server) deleteAlertObject(kind string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
		if s.cfg.Alerts == nil {
			return errNoAlerting
		}
		name := r.PathValue("name")
		auth.NoteOutcome(r, kind+"_delete")
		if err := s.cfg.Alerts.DeleteObject(r.Context(), kind, name, p.Subject); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}

// forecast serves GET /api/v1/forecast?campaign=.
func (s *Server) forecast(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	f, err := s.Forecast(r.Context(), p, r.URL.Query())
	if err != nil {
		return err
	}
	return writeJSON(w, f)
}

// Forecast answers GET /api/v1/forecast for p, args being the route's
// query parameters: the day's projection of one campaign (403 outside
// p's scope) and, with a budget, its pacing.
func (s *Server) Forecast(ctx context.Context, p *auth.Principal, args url.Values) (alerting.Forecast, error) {
	if s.cfg.Alerts == nil {
		return alerting.Forecast{}, errNoAlerting
	}
	if err := checkParams(args, forecastParams); err != nil {
		return alerting.Forecast{}, err
	}
	c := args.Get(pCampaign)
	if c == "" {
		return alerting.Forecast{}, badParam(pCampaign, "required")
	}
	if !p.CanSee(c) {
		return alerting.Forecast{}, errForbidden{c}
	}
	auth.NoteCampaignsContext(ctx, c)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	return s.cfg.Alerts.Forecast(ctx, c, s.cfg.Now())
}
