// Package control is knockwall's control socket: HTTP and JSON over a unix
// socket (so `curl --unix-socket` works), served inside the daemon by
// net/http, for the `knockwall status`, `grants`, `grant`, `revoke` and
// `reload` commands (docs/decisions.md says why net/http).
//
//	GET    /v1/status                     Status
//	GET    /v1/grants                     Grants
//	POST   /v1/grants {src, service, for} Grant
//	DELETE /v1/grants?src=A[&service=S]   Revoked
//	POST   /v1/reload                     Reloaded, or 422 for a bad configuration
//
// Only root and the daemon's own user may use it: the socket is mode 0600,
// and every connection's peer credentials (SO_PEERCRED) are checked when
// it is accepted, before it takes one of the connection slots, so a socket
// reachable by others (a loose mode, a bind mount) answers them 403 and
// they can never crowd out an operator. Requests are bounded in header and
// body size and in time. Every operator action (grant, revoke, reload) is
// logged at INFO with the peer's uid and pid.
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/knockwall/knockwall/internal/daemon"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
)

// Limits of the server.
const (
	// MaxBody bounds a request's body; a larger one is answered 413.
	MaxBody = 64 << 10
	// MaxHeader bounds a request's header; a larger one is answered 431.
	MaxHeader = 8 << 10
	// MaxGrantFor bounds an operator's grant: a year and a day is longer
	// than any maintenance window, and far from the tracker's clock limit.
	MaxGrantFor = 366 * 24 * time.Hour
	// readTimeout bounds the reading of a request, so a client that
	// connects and says nothing, or trickles, is cut off.
	readTimeout = 5 * time.Second
	// writeTimeout bounds one request after it is read, a reload (a
	// firewall rewrite) included.
	writeTimeout = time.Minute
	// idleTimeout bounds how long a connection waits for its next request.
	idleTimeout = 5 * time.Second
	// maxConns bounds the connections of allowed peers served at once;
	// more are answered 503. Operators' commands come one at a time; this
	// is room for scripts.
	maxConns = 16
	// maxRefusing bounds the refused connections (a peer not allowed, or
	// one past maxConns) being answered at once; past it they are closed
	// unanswered.
	maxRefusing = 8
	// refuseTimeout bounds the answer to a refused connection.
	refuseTimeout = time.Second
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
	srv    *http.Server
}

// route is one endpoint.
type route struct {
	method, path string
	h            func(ctx context.Context, r *request) response
}

// request is what a handler needs of an HTTP request, its body read.
type request struct {
	method, path string
	query        url.Values
	body         []byte
}

// response is a handler's answer.
type response struct {
	status int
	body   []byte // JSON
	allow  string // the Allow header of a 405
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
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    MaxHeader,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*peerConn); ok {
				return withPeer(ctx, pc.peer, nil)
			}
			return withPeer(ctx, Peer{}, fmt.Errorf("not a checked connection (%T)", c))
		},
		ErrorLog: slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
	}
	return s
}

// Serve answers connections on ln until Shutdown; it then returns nil.
// Each connection's peer is checked as it is accepted, and only allowed
// peers take one of the maxConns slots.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(newGate(ln, s.allowed, maxConns, s.cfg.Log))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, waits for requests under way until ctx ends,
// then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	return err
}

// allowed says whether p may use the socket, and if not, why, in words
// for the peer.
func (s *Server) allowed(p Peer) error {
	if p.UID != 0 && p.UID != s.cfg.UID {
		return fmt.Errorf("forbidden: uid %d may not use the control socket (root or uid %d only)", p.UID, s.cfg.UID)
	}
	return nil
}

// ServeHTTP reads the request's body (bounded), then serves it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := &request{method: r.Method, path: r.URL.Path, query: r.URL.Query()}
	resp := s.readBody(w, r, req)
	if resp.status == 0 {
		resp = s.serve(r.Context(), req)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if resp.allow != "" {
		h.Set("Allow", resp.allow)
	}
	w.WriteHeader(resp.status)
	if r.Method != "HEAD" {
		w.Write(resp.body)
	}
}

// readBody reads r's body into req: a body without a length (chunked) is
// refused 411 and one over MaxBody 413. The zero response means read.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, req *request) response {
	switch {
	case r.ContentLength == 0:
		return response{}
	case r.ContentLength < 0:
		return errorResponse(http.StatusLengthRequired, "Length Required: send the body with a Content-Length")
	case r.ContentLength > MaxBody:
		return errorResponse(http.StatusRequestEntityTooLarge, fmt.Sprintf("Content Too Large: a body is at most %d bytes", MaxBody))
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorResponse(http.StatusRequestEntityTooLarge, fmt.Sprintf("Content Too Large: a body is at most %d bytes", MaxBody))
		}
		return errorResponse(http.StatusBadRequest, "bad request body: "+err.Error())
	}
	req.body = b
	return response{}
}

// serve checks the peer in ctx again (the listener refused the others),
// then routes.
func (s *Server) serve(ctx context.Context, r *request) response {
	p, err := peerFrom(ctx)
	if err != nil {
		s.cfg.Log.Warn("control: peer refused: credentials unknown", keyErr, err)
		return errorResponse(http.StatusForbidden, "forbidden: the peer's credentials are unknown")
	}
	if err := s.allowed(p); err != nil {
		s.cfg.Log.Warn("control: peer refused", keyUID, p.UID, keyPID, p.PID, "path", r.path)
		return errorResponse(http.StatusForbidden, err.Error())
	}
	var allow []string
	for _, rt := range s.routes {
		if rt.path != r.path {
			continue
		}
		// HEAD is GET without the body (ServeHTTP drops it).
		if rt.method == r.method || (rt.method == "GET" && r.method == "HEAD") {
			return rt.h(ctx, r)
		}
		allow = append(allow, rt.method)
		if rt.method == "GET" {
			allow = append(allow, "HEAD")
		}
	}
	if allow == nil {
		return errorResponse(http.StatusNotFound, fmt.Sprintf("no endpoint %s (%s, %s, %s)", r.path, PathStatus, PathGrants, PathReload))
	}
	resp := errorResponse(http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.method, r.path, strings.Join(allow, ", ")))
	resp.allow = strings.Join(allow, ", ")
	return resp
}

func (s *Server) status(context.Context, *request) response {
	d := s.cfg.Daemon
	return jsonResponse(http.StatusOK, statusOf(d.Stats(), d.Services(), s.cfg.Now()))
}

func (s *Server) grants(context.Context, *request) response {
	now := s.cfg.Now()
	out := Grants{Grants: []Grant{}}
	for _, g := range s.cfg.Daemon.Grants() {
		out.Grants = append(out.Grants, grantOf(g, now))
	}
	return jsonResponse(http.StatusOK, out)
}

func (s *Server) grant(ctx context.Context, r *request) response {
	p, _ := peerFrom(ctx)
	var req GrantRequest
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return errorResponse(http.StatusBadRequest, "bad request body: "+err.Error())
	}
	src, err := parseSrc(req.Src)
	if err != nil {
		return errorResponse(http.StatusBadRequest, err.Error())
	}
	var dur time.Duration
	if req.For != "" {
		if dur, err = time.ParseDuration(req.For); err != nil || dur <= 0 || dur > MaxGrantFor {
			return errorResponse(http.StatusBadRequest, fmt.Sprintf("for: %q is not a positive duration of at most %s (e.g. 10m, 1h)", req.For, MaxGrantFor))
		}
	}
	if err := s.knownService(req.Service, false); err != nil {
		return errorResponse(http.StatusNotFound, err.Error())
	}
	log := s.cfg.Log.With(keyAction, "grant", keyUID, p.UID, keyPID, p.PID, keySrc, src.String(), keyService, req.Service, "for", req.For)
	g, err := s.cfg.Daemon.Grant(ctx, src, req.Service, dur, p.who())
	if err != nil {
		log.Info("control", keyErr, err)
		code := http.StatusInternalServerError
		if errors.Is(err, tracker.ErrGrantTableFull) {
			code = http.StatusServiceUnavailable
		}
		return errorResponse(code, err.Error())
	}
	log.Info("control", "until", g.Expires.UTC().Format(time.RFC3339))
	return jsonResponse(http.StatusOK, grantOf(g, s.cfg.Now()))
}

func (s *Server) revoke(ctx context.Context, r *request) response {
	p, _ := peerFrom(ctx)
	q := r.query
	src, err := parseSrc(q.Get("src"))
	if err != nil {
		return errorResponse(http.StatusBadRequest, err.Error())
	}
	service := q.Get("service")
	if err := s.knownService(service, true); err != nil {
		return errorResponse(http.StatusNotFound, err.Error())
	}
	log := s.cfg.Log.With(keyAction, "revoke", keyUID, p.UID, keyPID, p.PID, keySrc, src.String(), keyService, service)
	ended, err := s.cfg.Daemon.Revoke(ctx, src, service, p.who())
	if err != nil {
		log.Info("control", "grants", len(ended), keyErr, err)
		return errorResponse(http.StatusInternalServerError, err.Error())
	}
	log.Info("control", "grants", len(ended))
	return jsonResponse(http.StatusOK, Revoked{Revoked: len(ended)})
}

func (s *Server) reload(ctx context.Context, _ *request) response {
	p, _ := peerFrom(ctx)
	log := s.cfg.Log.With(keyAction, "reload", keyUID, p.UID, keyPID, p.PID)
	err := s.cfg.Daemon.Reload(ctx)
	if err != nil {
		log.Info("control", keyErr, err)
		if errors.Is(err, rules.ErrInvalid) {
			return jsonResponse(http.StatusUnprocessableEntity, Error{Error: err.Error(), InvalidConfig: true})
		}
		return errorResponse(http.StatusInternalServerError, err.Error())
	}
	log.Info("control", "reloaded", true)
	return jsonResponse(http.StatusOK, Reloaded{Reloaded: true})
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
func jsonResponse(code int, v any) response {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.Encode(v)
	return response{status: code, body: b.Bytes()}
}

func errorResponse(code int, msg string) response {
	return jsonResponse(code, Error{Error: msg})
}
