package control

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/knockwall/knockwall/internal/lograte"
)

// gate is the control socket's listener as the HTTP server sees it. At
// accept, before anything else, it asks the kernel who the peer is
// (SO_PEERCRED) and refuses a peer that may not use the socket; only then
// does an allowed connection take one of the slots, and past the slots it
// is refused 503. Refused connections are answered (403 or 503, as JSON)
// and closed by a small pool of their own, so peers that may not use the
// socket can hold neither the slots nor the accept loop.
type gate struct {
	net.Listener
	allow    func(Peer) error
	log      *slog.Logger
	logLimit *lograte.Limiter
	slots    chan struct{} // one per allowed connection served
	refusing chan struct{} // one per refused connection being answered
}

// newGate checks the peers of ln's connections with allow and serves at
// most slots of them at once. Deadlines and the log's rate limit are on
// the wall clock: they bound real I/O.
func newGate(ln net.Listener, allow func(Peer) error, slots int, log *slog.Logger) *gate {
	return &gate{Listener: ln, allow: allow, log: log, logLimit: &lograte.Limiter{Every: time.Second},
		slots: make(chan struct{}, slots), refusing: make(chan struct{}, maxRefusing)}
}

// Accept returns the next connection of an allowed peer that found a
// free slot; the slot is its until it is closed.
func (g *gate) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p, err := peerOf(c)
		if err != nil {
			if g.logLimit.Allow(time.Now()) {
				g.log.Warn("control: peer refused: credentials unknown", keyErr, err)
			}
			g.refuse(c, http.StatusForbidden, "forbidden: the peer's credentials are unknown")
			continue
		}
		if err := g.allow(p); err != nil {
			if g.logLimit.Allow(time.Now()) {
				g.log.Warn("control: peer refused", keyUID, p.UID, keyPID, p.PID)
			}
			g.refuse(c, http.StatusForbidden, err.Error())
			continue
		}
		select {
		case g.slots <- struct{}{}:
			return &peerConn{Conn: c, peer: p, release: func() { <-g.slots }}, nil
		default:
			g.refuse(c, http.StatusServiceUnavailable, fmt.Sprintf("Service Unavailable: %d requests are under way; try again", cap(g.slots)))
		}
	}
}

// refuse answers c with code and msg and closes it, in the background
// when a refusal slot is free, else at once without an answer.
func (g *gate) refuse(c net.Conn, code int, msg string) {
	select {
	case g.refusing <- struct{}{}:
		go func() {
			defer func() { <-g.refusing }()
			answerAndClose(c, code, msg, refuseTimeout)
		}()
	default:
		c.Close()
	}
}

// answerAndClose reads the request on c (so the peer, which wrote it,
// reads the answer rather than a reset), each step within timeout,
// answers code with an Error, and closes c.
func answerAndClose(c net.Conn, code int, msg string, timeout time.Duration) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(timeout))
	if req, err := http.ReadRequest(bufio.NewReader(io.LimitReader(c, MaxHeader))); err == nil {
		io.Copy(io.Discard, io.LimitReader(req.Body, MaxBody))
	}
	c.SetWriteDeadline(time.Now().Add(timeout))
	body := errorResponse(code, msg).body
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n",
		code, http.StatusText(code), strconv.Itoa(len(body)))
	b.Write(body)
	c.Write(b.Bytes())
}

// peerConn is an accepted connection of an allowed peer, holding a slot
// until it is closed.
type peerConn struct {
	net.Conn
	peer    Peer
	once    sync.Once
	release func()
}

func (c *peerConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
