package metrics

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/knockwall/knockwall/internal/keyfile"
)

// Path is where the metrics are served.
const Path = "/metrics"

// Limits of the server.
const (
	// readTimeout bounds the reading of a request's header.
	readTimeout  = 5 * time.Second
	writeTimeout = 30 * time.Second
	idleTimeout  = time.Minute
	// maxHeader bounds a request's header (a scrape's is a few hundred
	// bytes); more is answered 431.
	maxHeader = 8 << 10
	// maxScrapes bounds concurrent scrapes; more get 503.
	maxScrapes = 4
	// maxConns bounds the connections open at once (a scrape being read
	// holds one); more are closed as they come.
	maxConns = 16
	// textSize is room for one scrape's text: ~7 KB with two queues.
	textSize = 16 << 10
	// maxTokenFile bounds the token file read; MinToken is the shortest
	// token taken.
	maxTokenFile = 4 << 10
	MinToken     = 16
)

// Listen binds addr (metrics.listen). The daemon binds before it changes
// anything, so a taken address stops the start with this error.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen %s: %w", addr, err)
	}
	return ln, nil
}

// IsLoopback reports whether the host of addr (host:port) is a loopback
// address or localhost: an empty host listens on every address.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// ReadToken reads the bearer token that scrapers must send from path
// (metrics.token_file), checked as every key file is (a regular file that
// neither group nor others may access, owned by root or by the user
// running knockwall). Surrounding white space is dropped, as Prometheus
// drops it from its credentials_file; the token must be at least MinToken
// printable characters.
func ReadToken(path string) ([]byte, error) {
	b, err := keyfile.Read(path, maxTokenFile)
	if err != nil {
		return nil, err
	}
	tok := []byte(strings.TrimSpace(string(b)))
	if len(tok) < MinToken {
		return nil, fmt.Errorf("metrics token file %s holds %d characters, fewer than %d: write a random one (openssl rand -hex 32 > %s)", path, len(tok), MinToken, path)
	}
	for _, c := range tok {
		if c <= ' ' || c >= 0x7f {
			return nil, fmt.Errorf("metrics token file %s: the token has a space, a control or a non-ASCII character; use printable ASCII (openssl rand -hex 32)", path)
		}
	}
	return tok, nil
}

// Server serves Path from a collector to scrapers that send the token.
type Server struct {
	c       *Collector
	token   [sha256.Size]byte // the token's hash: compared in constant time
	scrapes chan struct{}
	srv     *http.Server
}

// NewServer serves c's metrics at Path to requests that carry
// "Authorization: Bearer TOKEN"; others are answered 401. The token must
// not be empty.
func NewServer(c *Collector, token []byte, log *slog.Logger) (*Server, error) {
	if len(token) == 0 {
		return nil, errors.New("metrics: no token: metrics are served only to scrapers that send one")
	}
	s := &Server{c: c, token: sha256.Sum256(token), scrapes: make(chan struct{}, maxScrapes)}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeader,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// ServeHTTP answers a GET (or HEAD) of Path with a scrape, to a request
// with the token. Without it, every request is answered 401 and nothing
// else: not even whether the path exists.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r.Header.Get("Authorization")) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="knockwall metrics"`)
		http.Error(w, "401 Unauthorized: send Authorization: Bearer <metrics.token_file>", http.StatusUnauthorized)
		return
	}
	switch {
	case r.URL.Path != Path:
		http.Error(w, "404 Not Found: metrics are at "+Path, http.StatusNotFound)
		return
	case r.Method != "GET" && r.Method != "HEAD":
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 Method Not Allowed: use GET", http.StatusMethodNotAllowed)
		return
	}
	select {
	case s.scrapes <- struct{}{}:
		defer func() { <-s.scrapes }()
	default:
		http.Error(w, "503 Service Unavailable: too many scrapes at once", http.StatusServiceUnavailable)
		return
	}
	body := s.c.AppendText(make([]byte, 0, textSize))
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	if r.Method != "HEAD" {
		w.Write(body)
	}
}

// authorized says whether the Authorization header h carries the token.
// The hashes are compared, so the time taken says nothing of the token,
// its length included. The scheme is case-insensitive (RFC 9110).
func (s *Server) authorized(h string) bool {
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(h[len(scheme):])))
	return subtle.ConstantTimeCompare(got[:], s.token[:]) == 1
}

// Serve answers on ln until Shutdown; it then returns nil. At most
// maxConns connections are open at once; more are closed as they come.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(&limitListener{Listener: ln, slots: make(chan struct{}, maxConns)})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server, waiting for scrapes under way until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	return err
}

// limitListener closes the connections that come while every slot is
// taken.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &slotConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			c.Close()
		}
	}
}

// slotConn holds a slot until it is closed.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
