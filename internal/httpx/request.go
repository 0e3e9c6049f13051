package httpx

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Default limits of a request.
const (
	DefaultMaxHeaderBytes = 8 << 10
	DefaultMaxBodyBytes   = 64 << 10
)

// Limits bound one request's size.
type Limits struct {
	// MaxHeaderBytes bounds the request line and the header fields, line
	// ends included; a longer head is answered 431. 0 is
	// DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// MaxBodyBytes bounds the body; a larger Content-Length is answered
	// 413. 0 is DefaultMaxBodyBytes.
	MaxBodyBytes int
}

func (l Limits) withDefaults() Limits {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	return l
}

// Field is one header field.
type Field struct{ Name, Value string }

// Header is the header fields of a message, in the order received.
type Header []Field

// Get is the value of the first field named name (names compare
// case-insensitively), or "".
func (h Header) Get(name string) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// Request is one request as read from a connection.
type Request struct {
	// Method is as sent: methods are case-sensitive ("GET", not "get").
	Method string
	// Target is the request-target as sent.
	Target string
	// Path is the target's path, percent-decoded ("/" for an
	// absolute-form target without one).
	Path string
	// Query is the target's query.
	Query url.Values
	// Proto is "HTTP/1.1" or "HTTP/1.0".
	Proto  string
	Header Header
	// Body is Content-Length bytes (empty without a Content-Length).
	Body []byte
	// Conn is the connection the request came on; nil for a request not
	// read by a Server.
	Conn net.Conn
}

// StatusError is a request refused before any handler saw it: the status
// to answer and why.
type StatusError struct {
	Status int
	Msg    string
}

func (e *StatusError) Error() string {
	return strconv.Itoa(e.Status) + " " + StatusText(e.Status) + ": " + e.Msg
}

func refuse(status int, format string, args ...any) error {
	return &StatusError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// errNoRequest: the peer closed the connection without sending a byte.
var errNoRequest = errors.New("connection closed before a request")

// ReadRequest reads one request (head and body) from br within lim. An
// error is a *StatusError for a request to refuse with its status, or the
// reading's own error (a timeout, a reset, io.EOF when nothing at all was
// received). An "Expect: 100-continue" is not answered here; Server
// answers it.
func ReadRequest(br *bufio.Reader, lim Limits) (*Request, error) {
	lim = lim.withDefaults()
	r, n, _, err := readHead(br, lim)
	if err != nil {
		if errors.Is(err, errNoRequest) {
			return nil, io.EOF
		}
		return nil, err
	}
	if r.Body, err = readBody(br, n); err != nil {
		return nil, err
	}
	return r, nil
}

// readHead reads a request's line and header fields, and says how long
// its body is and whether the client waits for a 100 (Continue) before
// sending it.
func readHead(br *bufio.Reader, lim Limits) (r *Request, bodyLen int, expectContinue bool, err error) {
	budget := lim.MaxHeaderBytes
	line, err := readLine(br, &budget)
	// A server should ignore at least one empty line before the request
	// line (RFC 9112, 2.2); the budget bounds how many.
	for err == nil && line == "" {
		line, err = readLine(br, &budget)
	}
	if err != nil {
		if errors.Is(err, io.EOF) && budget == lim.MaxHeaderBytes {
			return nil, 0, false, errNoRequest
		}
		return nil, 0, false, err
	}
	r, err = parseRequestLine(line)
	if err != nil {
		return nil, 0, false, err
	}
	if r.Header, err = readFields(br, &budget); err != nil {
		return nil, 0, false, err
	}
	bodyLen, err = bodyLength(r.Header, lim.MaxBodyBytes)
	if err != nil {
		return nil, 0, false, err
	}
	hosts := 0
	for _, f := range r.Header {
		if strings.EqualFold(f.Name, "Host") {
			hosts++
		}
	}
	if hosts > 1 || (hosts == 0 && r.Proto == "HTTP/1.1") {
		return nil, 0, false, refuse(StatusBadRequest, "an HTTP/1.1 request needs exactly one Host header field (%d)", hosts)
	}
	if e := r.Header.Get("Expect"); e != "" {
		if !strings.EqualFold(e, "100-continue") {
			return nil, 0, false, refuse(StatusExpectationFailed, "Expect: %q", e)
		}
		expectContinue = r.Proto == "HTTP/1.1" && bodyLen > 0
	}
	return r, bodyLen, expectContinue, nil
}

// readBody reads n bytes of body.
func readBody(br *bufio.Reader, n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, refuse(StatusBadRequest, "body shorter than its Content-Length %d", n)
		}
		return nil, err
	}
	return b, nil
}

// readLine reads one line ending in LF, spending its length from budget,
// and returns it without the LF and a CR before it. A line the budget
// cannot hold is a 431; a bare CR elsewhere is a 400. io.EOF: nothing was
// read; io.ErrUnexpectedEOF: the connection ended within the line.
func readLine(br *bufio.Reader, budget *int) (string, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(frag) > *budget {
			*budget = -1
			return "", refuse(StatusRequestHeaderFieldsTooLarge, "request line and header fields over the limit")
		}
		*budget -= len(frag)
		line = append(line, frag...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return "", io.ErrUnexpectedEOF
		}
		return "", err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	for _, c := range line {
		if c == '\r' || c == 0 {
			return "", refuse(StatusBadRequest, "a CR or NUL within a line")
		}
	}
	return string(line), nil
}

// parseRequestLine parses "METHOD SP request-target SP HTTP/1.x".
func parseRequestLine(line string) (*Request, error) {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || !isToken(method) || target == "" || strings.IndexByte(proto, ' ') >= 0 {
		return nil, refuse(StatusBadRequest, "malformed request line %q", truncate(line))
	}
	switch proto {
	case "HTTP/1.1", "HTTP/1.0":
	default:
		if len(proto) == 8 && strings.HasPrefix(proto, "HTTP/") && isDigit(proto[5]) && proto[6] == '.' && isDigit(proto[7]) {
			return nil, refuse(StatusHTTPVersionNotSupported, "%s: only HTTP/1.1 and HTTP/1.0", proto)
		}
		return nil, refuse(StatusBadRequest, "malformed protocol version %q", truncate(proto))
	}
	r := &Request{Method: method, Target: target, Proto: proto}
	var err error
	if r.Path, r.Query, err = parseTarget(target); err != nil {
		return nil, err
	}
	return r, nil
}

// parseTarget splits an origin-form ("/path?query") or absolute-form
// ("http://host/path?query") request-target into its decoded path and its
// query.
func parseTarget(target string) (string, url.Values, error) {
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return "", nil, refuse(StatusBadRequest, "request-target %q: a byte not allowed there", truncate(target))
		}
	}
	rest := target
	if rest[0] != '/' {
		scheme, after, ok := strings.Cut(rest, "://")
		if !ok || !(strings.EqualFold(scheme, "http") || strings.EqualFold(scheme, "https")) {
			return "", nil, refuse(StatusBadRequest, "request-target %q is neither a path nor an http URL", truncate(target))
		}
		// after is the authority, then the path and query if any.
		switch i := strings.IndexAny(after, "/?"); {
		case i < 0:
			rest = "/"
		case after[i] == '?':
			rest = "/" + after[i:]
		default:
			rest = after[i:]
		}
	}
	rawPath, rawQuery, _ := strings.Cut(rest, "?")
	path, err := url.PathUnescape(rawPath)
	if err != nil {
		return "", nil, refuse(StatusBadRequest, "request-target %q: %v", truncate(target), err)
	}
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", nil, refuse(StatusBadRequest, "request-target %q: %v", truncate(target), err)
	}
	return path, query, nil
}

// readFields reads header fields up to the empty line that ends them.
func readFields(br *bufio.Reader, budget *int) (Header, error) {
	var h Header
	for {
		line, err := readLine(br, budget)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if line == "" {
			return h, nil
		}
		f, err := parseField(line)
		if err != nil {
			return nil, err
		}
		h = append(h, f)
	}
}

// parseField parses "name: value". Folded lines (obs-fold) are refused,
// as a server may (RFC 9112, 5.2).
func parseField(line string) (Field, error) {
	name, value, ok := strings.Cut(line, ":")
	if !ok || !isToken(name) {
		return Field{}, refuse(StatusBadRequest, "malformed header field %q", truncate(line))
	}
	value = strings.Trim(value, " \t")
	for i := 0; i < len(value); i++ {
		if c := value[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return Field{}, refuse(StatusBadRequest, "header field %s: a control character in its value", name)
		}
	}
	return Field{Name: name, Value: value}, nil
}

// bodyLength is the body's length from Content-Length: absent, it is 0
// (a request without Content-Length or Transfer-Encoding has no body,
// RFC 9112, 6.3). Every Content-Length field must agree; a body over max
// is a 413. Transfer-Encoding (chunked bodies) is not read: 411 asks for
// a Content-Length, and both together are a 400 (a smuggling pattern).
func bodyLength(h Header, max int) (int, error) {
	n, seen, te := int64(0), false, false
	for _, f := range h {
		switch {
		case strings.EqualFold(f.Name, "Transfer-Encoding"):
			te = true
		case strings.EqualFold(f.Name, "Content-Length"):
			v, err := parseLength(f.Value)
			if err != nil {
				return 0, err
			}
			if seen && v != n {
				return 0, refuse(StatusBadRequest, "Content-Length fields disagree")
			}
			n, seen = v, true
		}
	}
	switch {
	case te && seen:
		return 0, refuse(StatusBadRequest, "both Transfer-Encoding and Content-Length")
	case te:
		return 0, refuse(StatusLengthRequired, "Transfer-Encoding is not supported: send the body with a Content-Length")
	case n > int64(max):
		return 0, refuse(StatusContentTooLarge, "a body of %d bytes, over the limit of %d", n, max)
	}
	return int(n), nil
}

// parseLength parses a Content-Length: decimal digits only (no sign, no
// list), at most 18 of them so the value fits an int64.
func parseLength(v string) (int64, error) {
	if v == "" || len(v) > 18 {
		return 0, refuse(StatusBadRequest, "Content-Length %q", truncate(v))
	}
	var n int64
	for i := 0; i < len(v); i++ {
		if !isDigit(v[i]) {
			return 0, refuse(StatusBadRequest, "Content-Length %q", truncate(v))
		}
		n = n*10 + int64(v[i]-'0')
	}
	return n, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isToken: s is a non-empty token (RFC 9110, 5.6.2), as methods and
// field names are.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', isDigit(c):
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// truncate shortens what a client sent for an error message.
func truncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
