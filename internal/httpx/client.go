package httpx

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// DefaultClientTimeout bounds a Client's request when its context has no
// earlier deadline.
const DefaultClientTimeout = time.Minute

// Client sends one request per connection and reads the answer.
type Client struct {
	// Dial opens the connection of one request.
	Dial func(ctx context.Context) (net.Conn, error)
	// Host is the Host header field.
	Host string
	// MaxResponseBytes bounds an answer's body; 0 is
	// DefaultMaxResponseBytes.
	MaxResponseBytes int
	// Timeout bounds a request, the connect included, when ctx has no
	// earlier deadline; 0 is DefaultClientTimeout.
	Timeout time.Duration
}

// Do sends method target with body (contentType "" when there is none)
// and returns the answer, whatever its status. An error is the dial's,
// the connection's, a malformed answer's, or ctx's.
func (c *Client) Do(ctx context.Context, method, target, contentType string, body []byte) (Response, error) {
	if !isToken(method) {
		return Response{}, fmt.Errorf("method %q is not a token", method)
	}
	if _, _, err := parseTarget(target); err != nil {
		return Response{}, fmt.Errorf("request-target %q: %w", target, err)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultClientTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := c.Dial(ctx)
	if err != nil {
		return Response{}, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	// A cancelled ctx interrupts the reads and writes under way.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req := make([]byte, 0, 128+len(target)+len(body))
	req = append(req, method...)
	req = append(req, ' ')
	req = append(req, target...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, sanitize(c.Host)...)
	req = append(req, "\r\nUser-Agent: knockwall\r\nConnection: close\r\n"...)
	if contentType != "" {
		req = append(req, "Content-Type: "...)
		req = append(req, sanitize(contentType)...)
		req = append(req, "\r\n"...)
	}
	if body != nil || method == "POST" || method == "PUT" {
		req = append(req, "Content-Length: "...)
		req = strconv.AppendInt(req, int64(len(body)), 10)
		req = append(req, "\r\n"...)
	}
	req = append(req, "\r\n"...)
	req = append(req, body...)
	if _, err := conn.Write(req); err != nil {
		return Response{}, ctxErr(ctx, err)
	}
	resp, err := ReadResponse(bufio.NewReader(conn), 0, c.MaxResponseBytes)
	if err != nil {
		return Response{}, ctxErr(ctx, err)
	}
	return resp, nil
}

// ctxErr is ctx's error when ctx ended (what failed then is its
// consequence), else err. The connection's deadline is ctx's, so a
// timeout at or past it is ctx's even before ctx's own timer has fired.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	var ne net.Error
	if d, ok := ctx.Deadline(); ok && errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return err
}
