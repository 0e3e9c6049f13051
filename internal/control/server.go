// Package control is knockwall's control socket: HTTP and JSON over a unix
// socket (so `curl --unix-socket` works), served inside the daemon, for the
// `knockwall status`, `grants`, `grant`, `revoke` and `reload` commands.
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
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
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
	// MaxBody bounds a request's body.
	MaxBody = 64 << 10
	// MaxGrantFor bounds an operator's grant: a year and a day is longer
	// than any maintenance window, and far from the tracker's clock limit.
	MaxGrantFor = 366 * 24 * time.Hour
	// readHeaderTimeout bounds a client that connects and says nothing.
	readHeaderTimeout = 5 * time.Second
	// writeTimeout bounds one request, a reload (a firewall rewrite)
	// included.
	writeTimeout = time.Minute
	idleTimeout  = time.Minute
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
	Grants() []daemon.GrantEntry
	Grant(ctx context.Context, src netip.Addr, service string, dur time.Duration, who string) (time.Time, error)
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
	cfg Config
	mux *http.ServeMux
	srv *http.Server
}

// New builds a server.
func New(cfg Config) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.UID == 0 {
		cfg.UID = uint32(os.Geteuid())
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET "+PathStatus, s.status)
	s.mux.HandleFunc("GET "+PathGrants, s.grants)
	s.mux.HandleFunc("POST "+PathGrants, s.grant)
	s.mux.HandleFunc("DELETE "+PathGrants, s.revoke)
	s.mux.HandleFunc("POST "+PathReload, s.reload)
	s.srv = &http.Server{
		Handler:           s,
		ConnContext:       connContext,
		ReadHeaderTimeout: readHeaderTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
	}
	return s
}

// Serve answers connections on ln until Shutdown; it then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
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

// ServeHTTP checks the peer, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, err := peerFrom(r.Context())
	if err != nil {
		s.cfg.Log.Warn("control: peer refused: credentials unknown", keyErr, err)
		writeError(w, http.StatusForbidden, "forbidden: the peer's credentials are unknown")
		return
	}
	if p.UID != 0 && p.UID != s.cfg.UID {
		s.cfg.Log.Warn("control: peer refused", keyUID, p.UID, keyPID, p.PID, "path", r.URL.Path)
		writeError(w, http.StatusForbidden, fmt.Sprintf("forbidden: uid %d may not use the control socket (root or uid %d only)", p.UID, s.cfg.UID))
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	d := s.cfg.Daemon
	writeJSON(w, http.StatusOK, statusOf(d.Stats(), d.Services(), s.cfg.Now()))
}

func (s *Server) grants(w http.ResponseWriter, r *http.Request) {
	now := s.cfg.Now()
	out := Grants{Grants: []Grant{}}
	for _, g := range s.cfg.Daemon.Grants() {
		out.Grants = append(out.Grants, grantOf(g, now))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) grant(w http.ResponseWriter, r *http.Request) {
	p, _ := peerFrom(r.Context())
	var req GrantRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return
	}
	src, err := parseSrc(req.Src)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var dur time.Duration
	if req.For != "" {
		if dur, err = time.ParseDuration(req.For); err != nil || dur <= 0 || dur > MaxGrantFor {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("for: %q is not a positive duration of at most %s (e.g. 10m, 1h)", req.For, MaxGrantFor))
			return
		}
	}
	if err := s.knownService(req.Service, false); err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	log := s.cfg.Log.With(keyAction, "grant", keyUID, p.UID, keyPID, p.PID, keySrc, src.String(), keyService, req.Service, "for", req.For)
	until, err := s.cfg.Daemon.Grant(r.Context(), src, req.Service, dur, p.who())
	if err != nil {
		log.Info("control", keyErr, err)
		code := http.StatusInternalServerError
		if errors.Is(err, tracker.ErrGrantTableFull) {
			code = http.StatusServiceUnavailable
		}
		writeError(w, code, err.Error())
		return
	}
	log.Info("control", "until", until.UTC().Format(time.RFC3339))
	now := s.cfg.Now()
	for _, g := range s.cfg.Daemon.Grants() {
		if g.Src == src.Unmap() && g.Service == req.Service {
			writeJSON(w, http.StatusOK, grantOf(g, now))
			return
		}
	}
	// Lapsed already (a grant shorter than this request took).
	writeJSON(w, http.StatusOK, Grant{Src: src.Unmap(), Service: req.Service, Expires: until.UTC(), How: tracker.MethodManual.String()})
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	p, _ := peerFrom(r.Context())
	q := r.URL.Query()
	src, err := parseSrc(q.Get("src"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	service := q.Get("service")
	if err := s.knownService(service, true); err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	log := s.cfg.Log.With(keyAction, "revoke", keyUID, p.UID, keyPID, p.PID, keySrc, src.String(), keyService, service)
	ended, err := s.cfg.Daemon.Revoke(r.Context(), src, service, p.who())
	if err != nil {
		log.Info("control", "grants", len(ended), keyErr, err)
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	log.Info("control", "grants", len(ended))
	writeJSON(w, http.StatusOK, Revoked{Revoked: len(ended)})
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	p, _ := peerFrom(r.Context())
	log := s.cfg.Log.With(keyAction, "reload", keyUID, p.UID, keyPID, p.PID)
	err := s.cfg.Daemon.Reload(r.Context())
	if err != nil {
		log.Info("control", keyErr, err)
		if errors.Is(err, rules.ErrInvalid) {
			writeJSON(w, http.StatusUnprocessableEntity, Error{Error: err.Error(), InvalidConfig: true})
			return
		}
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	log.Info("control", "reloaded", true)
	writeJSON(w, http.StatusOK, Reloaded{Reloaded: true})
}

// knownService checks that name is a service in force ("" passes when
// empty means every service).
func (s *Server) knownService(name string, emptyOK bool) error {
	if name == "" && emptyOK {
		return nil
	}
	var names []string
	for _, svc := range s.cfg.Daemon.Services() {
		if svc.Name == name {
			return nil
		}
		names = append(names, svc.Name)
	}
	slices.Sort(names)
	return fmt.Errorf("no service %q (services: %s)", name, strings.Join(names, ", "))
}

func parseSrc(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("src: %q is not an IPv4 or IPv6 address", s)
	}
	return a, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, Error{Error: msg})
}
