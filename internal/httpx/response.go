package httpx

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Status codes this package and its users answer with.
const (
	StatusContinue                    = 100
	StatusOK                          = 200
	StatusBadRequest                  = 400
	StatusForbidden                   = 403
	StatusNotFound                    = 404
	StatusMethodNotAllowed            = 405
	StatusRequestTimeout              = 408
	StatusLengthRequired              = 411
	StatusContentTooLarge             = 413
	StatusExpectationFailed           = 417
	StatusUnprocessableEntity         = 422
	StatusRequestHeaderFieldsTooLarge = 431
	StatusInternalServerError         = 500
	StatusServiceUnavailable          = 503
	StatusHTTPVersionNotSupported     = 505
)

var statusText = map[int]string{
	StatusContinue:                    "Continue",
	StatusOK:                          "OK",
	StatusBadRequest:                  "Bad Request",
	StatusForbidden:                   "Forbidden",
	StatusNotFound:                    "Not Found",
	StatusMethodNotAllowed:            "Method Not Allowed",
	StatusRequestTimeout:              "Request Timeout",
	StatusLengthRequired:              "Length Required",
	StatusContentTooLarge:             "Content Too Large",
	StatusExpectationFailed:           "Expectation Failed",
	StatusUnprocessableEntity:         "Unprocessable Content",
	StatusRequestHeaderFieldsTooLarge: "Request Header Fields Too Large",
	StatusInternalServerError:         "Internal Server Error",
	StatusServiceUnavailable:          "Service Unavailable",
	StatusHTTPVersionNotSupported:     "HTTP Version Not Supported",
}

// StatusText is the reason phrase of a status code this package knows,
// else "Status".
func StatusText(code int) string {
	if t, ok := statusText[code]; ok {
		return t
	}
	return "Status"
}

// Response is a handler's answer, and what a Client received.
type Response struct {
	Status int
	// ContentType is the Content-Type header; "" sends
	// "text/plain; charset=utf-8".
	ContentType string
	Body        []byte
	// Allow is the Allow header of a 405, "" for none.
	Allow string
}

// TextResponse is a text/plain answer of msg and a line end.
func TextResponse(status int, msg string) Response {
	return Response{Status: status, Body: []byte(msg + "\n")}
}

const defaultContentType = "text/plain; charset=utf-8"

// appendHead appends the status line and header fields of an answer with
// a body of bodyLen bytes. Every answer closes its connection.
func appendHead(b []byte, r Response, bodyLen int, now time.Time) []byte {
	ct := r.ContentType
	if ct == "" {
		ct = defaultContentType
	}
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, ' ')
	b = append(b, StatusText(r.Status)...)
	b = append(b, "\r\nDate: "...)
	b = now.UTC().AppendFormat(b, "Mon, 02 Jan 2006 15:04:05 GMT")
	b = append(b, "\r\nContent-Type: "...)
	b = append(b, sanitize(ct)...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(bodyLen), 10)
	if r.Allow != "" {
		b = append(b, "\r\nAllow: "...)
		b = append(b, sanitize(r.Allow)...)
	}
	return append(b, "\r\nConnection: close\r\n\r\n"...)
}

// sanitize keeps a header value on its line.
func sanitize(v string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, v)
}

// DefaultMaxResponseBytes bounds the body of an answer a Client reads.
const DefaultMaxResponseBytes = 16 << 20

// ReadResponse reads one answer from br: its head within maxHeader bytes,
// its body within maxBody bytes (0: the defaults). The body is
// Content-Length bytes, or without one what comes until the connection
// closes. Interim (1xx) answers are skipped. Chunked bodies are refused:
// a Server never sends them.
func ReadResponse(br *bufio.Reader, maxHeader, maxBody int) (Response, error) {
	if maxHeader <= 0 {
		maxHeader = DefaultMaxHeaderBytes
	}
	if maxBody <= 0 {
		maxBody = DefaultMaxResponseBytes
	}
	budget := maxHeader
	for {
		line, err := readLine(br, &budget)
		if err != nil {
			return Response{}, responseErr(err)
		}
		status, err := parseStatusLine(line)
		if err != nil {
			return Response{}, err
		}
		h, err := readFields(br, &budget)
		if err != nil {
			return Response{}, responseErr(err)
		}
		if status < 200 {
			continue
		}
		r := Response{Status: status, ContentType: h.Get("Content-Type"), Allow: h.Get("Allow")}
		if h.Get("Transfer-Encoding") != "" {
			return Response{}, errors.New("malformed HTTP response: Transfer-Encoding is not supported")
		}
		n, err := bodyLength(h, maxBody)
		switch {
		case err != nil:
			return Response{}, fmt.Errorf("malformed HTTP response: %w", err)
		case h.Get("Content-Length") != "":
			r.Body, err = readBody(br, n)
			if err != nil {
				return Response{}, fmt.Errorf("malformed HTTP response: %w", err)
			}
		default:
			b, err := io.ReadAll(io.LimitReader(br, int64(maxBody)+1))
			if err != nil {
				return Response{}, err
			}
			if len(b) > maxBody {
				return Response{}, fmt.Errorf("malformed HTTP response: a body over the limit of %d bytes", maxBody)
			}
			r.Body = b
		}
		return r, nil
	}
}

func responseErr(err error) error {
	var se *StatusError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("malformed HTTP response: %s", se.Msg)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("connection closed before a whole HTTP response: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// parseStatusLine parses "HTTP/1.x SP 3DIGIT SP reason".
func parseStatusLine(line string) (int, error) {
	proto, rest, ok := strings.Cut(line, " ")
	if !ok || (proto != "HTTP/1.1" && proto != "HTTP/1.0") || len(rest) < 3 || (len(rest) > 3 && rest[3] != ' ') {
		return 0, fmt.Errorf("malformed HTTP status line %q", truncate(line))
	}
	code := 0
	for i := range 3 {
		if !isDigit(rest[i]) {
			return 0, fmt.Errorf("malformed HTTP status line %q", truncate(line))
		}
		code = code*10 + int(rest[i]-'0')
	}
	if code < 100 {
		return 0, fmt.Errorf("malformed HTTP status line %q", truncate(line))
	}
	return code, nil
}
