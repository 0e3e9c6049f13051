// Package httpx is a small HTTP/1.1 server and client for knockwall's
// control socket and metrics endpoint, so that the daemon's binary links
// no net/http, nor the crypto/tls and x509 behind it (docs/decisions.md
// says why).
//
// Every connection carries one request and one answer, then closes
// ("Connection: close"); any HTTP/1.1 client copes, curl and Prometheus
// included. A request is a request line, header fields and a body of
// Content-Length bytes: chunked bodies are refused (411), as are heads
// over Limits.MaxHeaderBytes (431) and bodies over Limits.MaxBodyBytes
// (413). Reading a request is bounded in time as a whole (ReadTimeout),
// so a client that trickles bytes is cut off, and the answer by
// WriteTimeout. Connections open at once are bounded, and so are
// handlers running at once: over either limit the answer is 503.
package httpx

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
)

// Defaults of Config.
const (
	DefaultReadTimeout  = 5 * time.Second
	DefaultWriteTimeout = 30 * time.Second
	DefaultMaxConns     = 16
)

// Bounds of the work done on a connection after its answer.
const (
	// lingerTimeout and lingerBytes bound the reading of what a refused
	// client still sends, so that closing with unread data (a reset)
	// does not destroy the answer before the client reads it.
	lingerTimeout = time.Second
	lingerBytes   = 256 << 10
	// rejectTimeout bounds the writing of a 503 to a connection over
	// MaxConns.
	rejectTimeout = time.Second
)

// Handler answers one request. ctx ends when Shutdown gives up waiting.
// r.Conn is the connection (for its peer's credentials, say); the
// handler must not read from or write to it.
type Handler func(ctx context.Context, r *Request) Response

// Config is what a Server is made of.
type Config struct {
	Handler Handler
	Limits  Limits
	// ReadTimeout bounds the reading of a whole request, head and body,
	// from the connection's accept. 0 is DefaultReadTimeout.
	ReadTimeout time.Duration
	// WriteTimeout bounds the handler and the writing of its answer,
	// from the end of the request. 0 is DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxConns bounds the connections served at once; one more is
	// answered 503 at once. 0 is DefaultMaxConns.
	MaxConns int
	// MaxHandlers bounds the handlers running at once; a request over it
	// is answered 503. 0 is MaxConns.
	MaxHandlers int
	// ErrorResponse makes the answer to a request refused before the
	// handler (400, 408, 411, 413, 431, 503, ...); nil answers
	// TextResponse(status, msg).
	ErrorResponse func(status int, msg string) Response
	// Log receives, at DEBUG, the requests refused and the connections
	// that failed, and at ERROR a handler's panic. nil logs nothing.
	Log *slog.Logger
}

// Server answers one request per connection.
type Server struct {
	cfg      Config
	conns    chan struct{} // a slot per connection served
	handlers chan struct{} // a slot per handler running
	rejects  chan struct{} // a slot per connection being answered 503

	ctx    context.Context // the handlers'; cancelled when Shutdown gives up
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	active    map[net.Conn]bool // true once the request's first byte came
	wg        sync.WaitGroup    // Serve loops and connections
}

// NewServer is a server of cfg; it serves once Serve is called.
func NewServer(cfg Config) *Server {
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxHandlers <= 0 {
		cfg.MaxHandlers = cfg.MaxConns
	}
	if cfg.ErrorResponse == nil {
		cfg.ErrorResponse = TextResponse
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cfg.Limits = cfg.Limits.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:       cfg,
		conns:     make(chan struct{}, cfg.MaxConns),
		handlers:  make(chan struct{}, cfg.MaxHandlers),
		rejects:   make(chan struct{}, cfg.MaxConns),
		ctx:       ctx,
		cancel:    cancel,
		listeners: map[net.Listener]struct{}{},
		active:    map[net.Conn]bool{},
	}
}

// Serve accepts connections on ln until Shutdown, then returns nil; it
// closes ln when it returns. Another error of Accept that is not a
// passing one (out of file descriptors, say) is returned.
func (s *Server) Serve(ln net.Listener) error {
	defer ln.Close()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		s.wg.Done()
	}()
	var pause time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			if !passing(err) {
				return err
			}
			// Out of descriptors or memory for a moment: wait, as
			// net/http does, rather than spin.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.cfg.Log.Debug("httpx: accept", "err", err, "retry_in", pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		select {
		case s.conns <- struct{}{}:
			if !s.track(c) {
				<-s.conns
				c.Close()
				return nil
			}
			go s.serveConn(c)
		default:
			s.reject(c)
		}
	}
}

// passing: an Accept error worth retrying.
func passing(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track counts c in, unless the server is shutting down.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.active[c] = false
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.active, c)
	s.mu.Unlock()
	s.wg.Done()
}

// started marks c as having sent a byte: Shutdown waits for it.
func (s *Server) started(c net.Conn) {
	s.mu.Lock()
	if _, ok := s.active[c]; ok {
		s.active[c] = true
	}
	s.mu.Unlock()
}

// reject answers 503 to a connection over MaxConns, on a goroutine of
// its own, within rejectTimeout. Those goroutines are bounded too: past
// MaxConns of them a connection is closed unread.
func (s *Server) reject(c net.Conn) {
	select {
	case s.rejects <- struct{}{}:
	default:
		c.Close()
		return
	}
	if !s.track(c) {
		<-s.rejects
		c.Close()
		return
	}
	go func() {
		defer func() { <-s.rejects }()
		defer s.untrack(c)
		defer c.Close()
		c.SetDeadline(time.Now().Add(rejectTimeout))
		// The head is read first: a client that gets its answer before it
		// has sent its request may take it for a stray (Go's does).
		if _, _, _, err := readHead(bufio.NewReader(c), s.cfg.Limits); err != nil {
			var se *StatusError
			if !errors.As(err, &se) {
				return
			}
		}
		s.cfg.Log.Debug("httpx: refused", "remote", remote(c), "status", StatusServiceUnavailable, "err", "too many connections")
		s.write(c, s.cfg.ErrorResponse(StatusServiceUnavailable, "too many connections; try again"), false)
		linger(c)
	}()
}

func (s *Server) serveConn(c net.Conn) {
	defer func() { <-s.conns }()
	defer s.untrack(c)
	defer c.Close()
	deadline := time.Now().Add(s.cfg.ReadTimeout)
	c.SetReadDeadline(deadline)
	br := bufio.NewReader(c)
	if _, err := br.Peek(1); err != nil {
		return
	}
	s.started(c)
	r, n, expect, err := readHead(br, s.cfg.Limits)
	if err == nil && expect {
		c.SetWriteDeadline(deadline)
		_, err = c.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
	}
	if err == nil {
		r.Body, err = readBody(br, n)
	}
	if err != nil {
		s.refused(c, err)
		return
	}
	r.Conn = c
	c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	var resp Response
	select {
	case s.handlers <- struct{}{}:
		resp = s.handle(r)
		<-s.handlers
	default:
		s.cfg.Log.Debug("httpx: refused", "remote", remote(c), "status", StatusServiceUnavailable, "err", "too many requests")
		resp = s.cfg.ErrorResponse(StatusServiceUnavailable, "too many requests at once; try again")
	}
	s.write(c, resp, r.Method == "HEAD")
	closeWrite(c)
}

// handle runs the handler; a panic, or a status that is not a final one,
// is logged and answered 500.
func (s *Server) handle(r *Request) (resp Response) {
	defer func() {
		if p := recover(); p != nil {
			s.cfg.Log.Error("httpx: handler panicked", "method", r.Method, "path", r.Path, "panic", p, "stack", string(debug.Stack()))
			resp = s.cfg.ErrorResponse(StatusInternalServerError, "internal error")
		}
	}()
	resp = s.cfg.Handler(s.ctx, r)
	if resp.Status < 200 || resp.Status > 999 {
		s.cfg.Log.Error("httpx: handler answered a status that is not a final one", "method", r.Method, "path", r.Path, "status", resp.Status)
		resp = s.cfg.ErrorResponse(StatusInternalServerError, "internal error")
	}
	return resp
}

// refused answers a request that could not be read, if anyone is left to
// read the answer.
func (s *Server) refused(c net.Conn, err error) {
	var se *StatusError
	var ne net.Error
	switch {
	case errors.As(err, &se):
	case errors.As(err, &ne) && ne.Timeout():
		se = &StatusError{Status: StatusRequestTimeout, Msg: "the request took too long to arrive"}
	default:
		// Gone, or reset: nobody to answer.
		s.cfg.Log.Debug("httpx: read", "remote", remote(c), "err", err)
		return
	}
	s.cfg.Log.Debug("httpx: refused", "remote", remote(c), "status", se.Status, "err", se.Msg)
	c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	s.write(c, s.cfg.ErrorResponse(se.Status, StatusText(se.Status)+": "+se.Msg), false)
	linger(c)
}

// write sends resp (its head alone when head is set).
func (s *Server) write(c net.Conn, resp Response, head bool) {
	b := appendHead(make([]byte, 0, 192), resp, len(resp.Body), time.Now())
	bufs := net.Buffers{b}
	if !head && len(resp.Body) > 0 {
		bufs = append(bufs, resp.Body)
	}
	if _, err := bufs.WriteTo(c); err != nil {
		s.cfg.Log.Debug("httpx: write", "remote", remote(c), "err", err)
	}
}

// closeWrite ends the sending side, so the client sees the end of the
// answer at once.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// linger ends the sending side, then reads and drops what the client
// still sends (a body refused unread, say), bounded in bytes and time,
// until it closes: closing a socket with unread data resets the
// connection, which can destroy the answer before the client reads it.
func linger(c net.Conn) {
	closeWrite(c)
	c.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.CopyN(io.Discard, c, lingerBytes)
}

func remote(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return c.LocalAddr().String()
}

// Shutdown stops accepting, closes the connections that have sent
// nothing yet, and waits until the requests under way are answered or ctx
// ends; then it closes what is left, cancels the handlers' context and
// returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c, started := range s.active {
		if !started {
			c.Close()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
	}
	// Closed first, so a handler that returns when cancelled has nobody
	// to answer.
	s.mu.Lock()
	for c := range s.active {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	return ctx.Err()
}
