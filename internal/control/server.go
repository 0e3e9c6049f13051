// Package control is knockwall's control socket: HTTP and JSON over a unix
// socket (so `curl --unix-socket` works), served inside the daemon, for the
// `knockwall status`, `grants`, `grant`, `revoke` and `reload` commands.
// Server and Client speak HTTP/1.1 through internal/httpx (one request per
// connection, bounded in size and time), so that the daemon links no
// net/http (docs/decisions.md says why).
//
//	GET    /v1/status                     Status
//	GET    /v1/grants                     Grants
//	POST   /v1/grants {src, service, for} Grant
//	DELETE /v1/grants?src=A[&service=S]   Revoked
//	POST   /v1/reload                     Reloaded, or 422 for a bad configuration
//
// Only root and the daemon's own user may use it: the socket is mode 0600,
// and every connection's peer credentials (SO_PEERCRED) are checked, so a
// socket reachable by others (a loose mode, a bind mount) still answers
// them 403. Every operator action (grant, revoke, reload) is logged at INFO
// with the peer's uid and pid.
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/knockwall/knockwall/internal/daemon"
	"github.com/knockwall/knockwall/internal/httpx"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
)

// Limits of the server.
const (
	// MaxBody bounds a request's body; a larger one is answered 413.
	MaxBody = 64 << 10
	// MaxGrantFor bounds an operator's grant: a year and a day is longer
	// than any maintenance window, and far from the tracker's clock limit.
	MaxGrantFor = 366 * 24 * time.Hour
	// readTimeout bounds the reading of a request, so a client that
	// connects and says nothing, or trickles, is cut off.
	readTimeout = 5 * time.Second
	// writeTimeout bounds one request after it is read, a reload (a
	// firewall rewrite) included.
	writeTimeout = time.Minute
	// maxConns bounds the connections served at once; more are answered
	// 503. Operators' commands come one at a time; this is room for
	// scripts.
	maxConns = 16
)

// Log attribute keys.
const (
	keyAction  = "action"
	keyUID     = "uid"
	keyPID     = "pid"
	keySrc     = "src"
	keyService = "service"
	keyErr     = "err"
)

// Daemon is what the control socket asks of the running daemon
// (*daemon.Daemon).
type Daemon interface {
	Stats() daemon.Stats
	Services() []daemon.ServiceStatus
	ServiceNames() []string
	Grants() []daemon.GrantEntry
	Grant(ctx context.Context, src netip.Addr, service string, dur time.Duration, who string) (daemon.GrantEntry, error)
	Revoke(ctx context.Context, src netip.Addr, service string, who string) ([]tracker.GrantInfo, error)
	Reload(ctx context.Context) error
}

// Config is what a Server is made of.
type Config struct {
	Daemon Daemon
	Log    *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// UID is, besides root, the one user allowed: the daemon's effective
	// uid (New sets it when zero).
	UID uint32
}

// Server serves the control API.
type Server struct {
	cfg    Config
	routes []route
	srv    *httpx.Server
}

// route is one endpoint.
type route struct {
	method, path string
	h            func(ctx context.Context, r *httpx.Request) httpx.Response
}

// New builds a server.
func New(cfg Config) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.UID == 0 {
		cfg.UID = uint32(os.Geteuid())
	}
	s := &Server{cfg: cfg}
	s.routes = []route{
		{"GET", PathStatus, s.status},
		{"GET", PathGrants, s.grants},
		{"POST", PathGrants, s.grant},
		{"DELETE", PathGrants, s.revoke},
		{"POST", PathReload, s.reload},
	}
	s.srv = httpx.NewServer(httpx.Config{
		Handler:      s.serveConn,
		Limits:       httpx.Limits{MaxBodyBytes: MaxBody},
		ReadTimeout:  readTimeout,
		WriteTimeout: writeTimeout,
		MaxConns:     maxConns,
		// Every answer but a 200 is an Error, refusals of the HTTP layer
		// (413, 431, 503, ...) included.
		ErrorResponse: errorResponse,
		Log:           cfg.Log,
	})
	return s
}

// Serve answers connections on ln until Shutdown; it then returns nil.
func (s *Server) Serve(ln net.Listener) error { return s.srv.Serve(ln) }

// Shutdown stops accepting, waits for requests under way until ctx ends,
// then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// serveConn serves a request with its connection's peer, as the kernel
// says.
func (s *Server) serveConn(ctx context.Context, r *httpx.Request) httpx.Response {
	p, err := peerOf(r.Conn)
	return s.serve(withPeer(ctx, p, err), r)
}

// serve checks the peer in ctx, then routes.
func (s *Server) serve(ctx context.Context, r *httpx.Request) httpx.Response {
	p, err := peerFrom(ctx)
	if err != nil {
		s.cfg.Log.Warn("control: peer refused: credentials unknown", keyErr, err)
		return errorResponse(httpx.StatusForbidden, "forbidden: the peer's credentials are unknown")
	}
	if p.UID != 0 && p.UID != s.cfg.UID {
		s.cfg.Log.Warn("control: peer refused", keyUID, p.UID, keyPID, p.PID, "path", r.Path)
		return errorResponse(httpx.StatusForbidden, fmt.Sprintf("forbidden: uid %d may not use the control socket (root or uid %d only)", p.UID, s.cfg.UID))
	}
	var allow []string
	for _, rt := range s.routes {
		if rt.path != r.Path {
			continue
		}
		// HEAD is GET without the body (the server drops it).
		if rt.method == r.Method || (rt.method == "GET" && r.Method == "HEAD") {
			return rt.h(ctx, r)
		}
		allow = append(allow, rt.method)
		if rt.method == "GET" {
			allow = append(allow, "HEAD")
		}
	}
	if allow == nil {
		return errorResponse(httpx.StatusNotFound, fmt.Sprintf("no endpoint %s (%s, %s, %s)", r.Path, PathStatus, PathGrants, PathReload))
	}
	resp := errorResponse(httpx.StatusMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.Method, r.Path, strings.Join(allow, ", ")))
	resp.Allow = strings.Join(allow, ", ")
	return resp
}

func (s *Server) status(context.Context, *httpx.Request) httpx.Response {
	d := s.cfg.Daemon
	return jsonResponse(httpx.StatusOK, statusOf(d.Stats(), d.Services(), s.cfg.Now()))
}

func (s *Server) grants(context.Context, *httpx.Request) httpx.Response {
	now := s.cfg.Now()
	out := Grants{Grants: []Grant{}}
	for _, g := range s.cfg.Daemon.Grants() {
		out.Grants = append(out.Grants, grantOf(g, now))
	}
	return jsonResponse(httpx.StatusOK, out)
}

func (s *Server) grant(ctx context.Context, r *httpx.Request) httpx.Response {
	p, _ := peerFrom(ctx)
	var req GrantRequest
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return errorResponse(httpx.StatusBadRequest, "bad request body: "+err.Error())
	}
	src, err := parseSrc(req.Src)
	if err != nil {
		return errorResponse(httpx.StatusBadRequest, err.Error())
	}
	var dur time.Duration
	if req.For != "" {
		if dur, err = time.ParseDuration(req.For); err != nil || dur <= 0 || dur > MaxGrantFor {
			return errorResponse(httpx.StatusBadRequest, fmt.Sprintf("for: %q is not a positive duration of at most %s (e.g. 10m, 1h)", req.For, MaxGrantFor))
		}
	}
	if err := s.knownService(req.Service, false); err != nil {
		return errorResponse(httpx.StatusNotFound, err.Error())
	}
	log := s.cfg.Log.With(keyAction, "grant", keyUID, p.UID, keyPID, p.PID, keySrc, src.String(), keyService, req.Service, "for", req.For)
	g, err := s.cfg.Daemon.Grant(ctx, src, req.Service, dur, p.who())
	if err != nil {
		log.Info("control", keyErr, err)
		code := httpx.StatusInternalServerError
		if errors.Is(err, tracker.ErrGrantTableFull) {
			code = httpx.StatusServiceUnavailable
		}
		return errorResponse(code, err.Error())
	}
	log.Info("control", "until", g.Expires.UTC().Format(time.RFC3339))
	return jsonResponse(httpx.StatusOK, grantOf(g, s.cfg.Now()))
}

func (s *Server) revoke(ctx context.Context, r *httpx.Request) httpx.Response {
	p, _ := peerFrom(ctx)
	q := r.Query
	src, err := parseSrc(q.Get("src"))
	if err != nil {
		return errorResponse(httpx.StatusBadRequest, err.Error())
	}
	service := q.Get("service")
	if err := s.knownService(service, true); err != nil {
		return errorResponse(httpx.StatusNotFound, err.Error())
	}
	log := s.cfg.Log.With(keyAction, "revoke", keyUID, p.UID, keyPID, p.PID, keySrc, src.String(), keyService, service)
	ended, err := s.cfg.Daemon.Revoke(ctx, src, service, p.who())
	if err != nil {
		log.Info("control", "grants", len(ended), keyErr, err)
		return errorResponse(httpx.StatusInternalServerError, err.Error())
	}
	log.Info("control", "grants", len(ended))
	return jsonResponse(httpx.StatusOK, Revoked{Revoked: len(ended)})
}

func (s *Server) reload(ctx context.Context, _ *httpx.Request) httpx.Response {
	p, _ := peerFrom(ctx)
	log := s.cfg.Log.With(keyAction, "reload", keyUID, p.UID, keyPID, p.PID)
	err := s.cfg.Daemon.Reload(ctx)
	if err != nil {
		log.Info("control", keyErr, err)
		if errors.Is(err, rules.ErrInvalid) {
			return jsonResponse(httpx.StatusUnprocessableEntity, Error{Error: err.Error(), InvalidConfig: true})
		}
		return errorResponse(httpx.StatusInternalServerError, err.Error())
	}
	log.Info("control", "reloaded", true)
	return jsonResponse(httpx.StatusOK, Reloaded{Reloaded: true})
}

// knownService checks that name is a service in force ("" passes when
// empty means every service).
func (s *Server) knownService(name string, emptyOK bool) error {
	if name == "" && emptyOK {
		return nil
	}
	names := s.cfg.Daemon.ServiceNames()
	if slices.Contains(names, name) {
		return nil
	}
	slices.Sort(names)
	return fmt.Errorf("no service %q (services: %s)", name, strings.Join(names, ", "))
}

// ParseSrc parses a source address as the API takes it: IPv4 or IPv6,
// no zone.
func ParseSrc(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IPv4 or IPv6 address", s)
	}
	return a, nil
}

func parseSrc(s string) (netip.Addr, error) {
	a, err := ParseSrc(s)
	if err != nil {
		return a, fmt.Errorf("src: %w", err)
	}
	return a, nil
}

// jsonResponse is v, indented, as the answer.
func jsonResponse(code int, v any) httpx.Response {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.Encode(v)
	return httpx.Response{Status: code, ContentType: "application/json", Body: b.Bytes()}
}

func errorResponse(code int, msg string) httpx.Response {
	return jsonResponse(code, Error{Error: msg})
}
