package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/knockwall/knockwall/internal/httpx"
)

// Path is where the metrics are served.
const Path = "/metrics"

// Limits of the server.
const (
	// readTimeout bounds the reading of a request.
	readTimeout  = 5 * time.Second
	writeTimeout = 30 * time.Second
	// maxScrapes bounds concurrent scrapes; more get 503.
	maxScrapes = 4
	// maxConns bounds the connections open at once (a scrape being read
	// holds one); more get 503.
	maxConns = 16
	// maxRequestBody bounds a request's body: a scrape has none.
	maxRequestBody = 1 << 10
	// textSize is room for one scrape's text: ~7 KB with two queues.
	textSize = 16 << 10
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

// Server serves Path from a collector.
type Server struct {
	srv *httpx.Server
}

// NewServer serves c's metrics at Path.
func NewServer(c *Collector, log *slog.Logger) *Server {
	return &Server{srv: httpx.NewServer(httpx.Config{
		Handler:      handler(c),
		Limits:       httpx.Limits{MaxBodyBytes: maxRequestBody},
		ReadTimeout:  readTimeout,
		WriteTimeout: writeTimeout,
		MaxConns:     maxConns,
		MaxHandlers:  maxScrapes,
		Log:          log,
	})}
}

// handler answers GET (and HEAD) of Path with a scrape of c.
func handler(c *Collector) httpx.Handler {
	return func(_ context.Context, r *httpx.Request) httpx.Response {
		switch {
		case r.Path != Path:
			return httpx.TextResponse(httpx.StatusNotFound, "404 Not Found: metrics are at "+Path)
		case r.Method != "GET" && r.Method != "HEAD":
			resp := httpx.TextResponse(httpx.StatusMethodNotAllowed, "405 Method Not Allowed: use GET")
			resp.Allow = "GET, HEAD"
			return resp
		}
		return httpx.Response{Status: httpx.StatusOK, ContentType: ContentType, Body: c.AppendText(make([]byte, 0, textSize))}
	}
}

// Serve answers on ln until Shutdown; it then returns nil.
func (s *Server) Serve(ln net.Listener) error { return s.srv.Serve(ln) }

// Shutdown stops the server, waiting for scrapes under way until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
