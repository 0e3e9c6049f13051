package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/knockwall/knockwall/rules"
)

// Errors an APIError unwraps to, by status.
var (
	ErrForbidden  = errors.New("forbidden")
	ErrNotFound   = errors.New("not found")
	ErrBadRequest = errors.New("bad request")
)

// UnreachableError: no answer from the daemon at Path.
type UnreachableError struct {
	Path string
	Err  error
}

func (e *UnreachableError) Error() string {
	hint := "is knockwall running, with control.socket set to this path?"
	if errors.Is(e.Err, fs.ErrPermission) {
		hint = "the control socket is for root"
	}
	return fmt.Sprintf("cannot reach the knockwall daemon at %s: %v (%s)", e.Path, e.Err, hint)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// APIError is an answer other than 200. A reload refused for a bad
// configuration unwraps to rules.ErrInvalid.
type APIError struct {
	Status        int
	Msg           string
	InvalidConfig bool
}

func (e *APIError) Error() string { return e.Msg }

func (e *APIError) Unwrap() error {
	switch {
	case e.InvalidConfig:
		return rules.ErrInvalid
	case e.Status == http.StatusForbidden:
		return ErrForbidden
	case e.Status == http.StatusNotFound:
		return ErrNotFound
	case e.Status == http.StatusBadRequest:
		return ErrBadRequest
	}
	return nil
}

// maxAnswer bounds an answer's body: a status or a list of grants of a
// full grant table is well under it.
const maxAnswer = 16 << 20

// Client talks to the control socket at a path.
type Client struct {
	path string
}

// NewClient is a client of the socket at path. Each request has its own
// connection; a request's context bounds it.
func NewClient(path string) *Client {
	return &Client{path: path}
}

// Status asks for the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, "GET", PathStatus, nil, &s)
	return s, err
}

// Grants lists the live grants.
func (c *Client) Grants(ctx context.Context) ([]Grant, error) {
	var g Grants
	err := c.do(ctx, "GET", PathGrants, nil, &g)
	return g.Grants, err
}

// Grant grants a service to a source.
func (c *Client) Grant(ctx context.Context, req GrantRequest) (Grant, error) {
	var g Grant
	err := c.do(ctx, "POST", PathGrants, req, &g)
	return g, err
}

// Revoke ends src's grants of service, or of every service when service
// is "", and says how many it ended.
func (c *Client) Revoke(ctx context.Context, src, service string) (int, error) {
	q := url.Values{"src": {src}}
	if service != "" {
		q.Set("service", service)
	}
	var r Revoked
	err := c.do(ctx, "DELETE", PathGrants+"?"+q.Encode(), nil, &r)
	return r.Revoked, err
}

// Reload asks the daemon to read its configuration again; nil means the
// daemon answered that the new configuration is in force.
func (c *Client) Reload(ctx context.Context) error {
	var r Reloaded
	if err := c.do(ctx, "POST", PathReload, nil, &r); err != nil {
		return err
	}
	if !r.Reloaded {
		return errors.New("the daemon did not say that it reloaded")
	}
	return nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	var contentType string
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, contentType = b, "application/json"
	}
	// A placeholder host: the socket is the address.
	req, err := http.NewRequestWithContext(ctx, method, "http://knockwall"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, b, err := c.roundTrip(ctx, req)
	if err != nil {
		return &UnreachableError{Path: c.path, Err: err}
	}
	if len(b) > maxAnswer {
		return fmt.Errorf("the daemon's answer is larger than %d bytes", maxAnswer)
	}
	if resp.StatusCode != http.StatusOK {
		var e Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(b))
		}
		return &APIError{Status: resp.StatusCode, Msg: e.Error, InvalidConfig: e.InvalidConfig}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("the daemon's answer: %w", err)
	}
	return nil
}

// roundTrip sends req on a connection of its own to the socket and reads
// the answer, with net/http's own writer and reader: a unix socket needs
// none of http.Transport's pooling, proxies or TLS (nor their bytes in the
// binary). The body read stops past maxAnswer.
func (c *Client) roundTrip(ctx context.Context, req *http.Request) (*http.Response, []byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Cancelling ctx unblocks the reads and writes below.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req.Close = true
	if err := req.Write(conn); err != nil {
		return nil, nil, ctxErr(ctx, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return nil, nil, ctxErr(ctx, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, nil, ctxErr(ctx, err)
	}
	return resp, b, nil
}

// ctxErr is ctx's error when ctx ended, else err.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
