package httpx

import (
	"bufio"
	"errors"
	"io"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// testLimits are small, so the tests can cross them.
var testLimits = Limits{MaxHeaderBytes: 256, MaxBodyBytes: 16}

// TestReadRequest: what is parsed from well-formed requests, and the
// status every malformed or over-limit one is refused with.
func TestReadRequest(t *testing.T) {
	long := strings.Repeat("a", 300)
	tests := []struct {
		name       string
		raw        string
		wantMethod string
		wantPath   string
		wantQuery  url.Values
		wantBody   string
		wantStatus int   // a *StatusError with this status
		wantErr    error // else an error matching this
	}{
		{name: "GET", raw: "GET /v1/status HTTP/1.1\r\nHost: knockwall\r\n\r\n", wantMethod: "GET", wantPath: "/v1/status"},
		{name: "bare LF line ends", raw: "GET /metrics HTTP/1.1\nHost: x\n\n", wantMethod: "GET", wantPath: "/metrics"},
		{name: "an empty line before the request line", raw: "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", wantMethod: "GET", wantPath: "/"},
		{name: "POST with a body", raw: "POST /v1/grants HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", wantMethod: "POST", wantPath: "/v1/grants", wantBody: "hello"},
		{name: "a body at the limit", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n0123456789abcdef", wantMethod: "POST", wantPath: "/", wantBody: "0123456789abcdef"},
		{name: "what follows the body is not read", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n", wantMethod: "POST", wantPath: "/", wantBody: "ok"},
		{name: "Content-Length repeated alike", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\ncontent-length:  1 \r\n\r\nx", wantMethod: "POST", wantPath: "/", wantBody: "x"},
		{name: "query", raw: "DELETE /v1/grants?src=10.0.0.1&service=s%20h HTTP/1.1\r\nHost: x\r\n\r\n", wantMethod: "DELETE", wantPath: "/v1/grants",
			wantQuery: url.Values{"src": {"10.0.0.1"}, "service": {"s h"}}},
		{name: "percent-decoded path", raw: "GET /v1/st%61tus HTTP/1.1\r\nHost: x\r\n\r\n", wantMethod: "GET", wantPath: "/v1/status"},
		{name: "absolute form", raw: "GET http://knockwall/v1/status?a=1 HTTP/1.1\r\nHost: knockwall\r\n\r\n", wantMethod: "GET", wantPath: "/v1/status", wantQuery: url.Values{"a": {"1"}}},
		{name: "absolute form without a path", raw: "GET HTTP://knockwall HTTP/1.1\r\nHost: knockwall\r\n\r\n", wantMethod: "GET", wantPath: "/"},
		{name: "absolute form with a query only", raw: "GET http://knockwall?a=1 HTTP/1.1\r\nHost: knockwall\r\n\r\n", wantMethod: "GET", wantPath: "/", wantQuery: url.Values{"a": {"1"}}},
		{name: "HTTP/1.0 needs no Host", raw: "GET / HTTP/1.0\r\n\r\n", wantMethod: "GET", wantPath: "/"},
		{name: "the method's case is kept", raw: "get / HTTP/1.1\r\nHost: x\r\n\r\n", wantMethod: "get", wantPath: "/"},
		{name: "Expect 100-continue", raw: "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx", wantMethod: "POST", wantPath: "/", wantBody: "x"},
		{name: "a head at the limit", raw: "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 256-len("GET / HTTP/1.1\r\nHost: x\r\nX: \r\n\r\n")) + "\r\n\r\n", wantMethod: "GET", wantPath: "/"},

		{name: "nothing", raw: "", wantErr: io.EOF},
		{name: "the head cut short", raw: "GET / HTTP/1.1\r\nHost: x\r\n", wantErr: io.ErrUnexpectedEOF},
		{name: "the request line cut short", raw: "GET / HTTP/1.1", wantErr: io.ErrUnexpectedEOF},
		{name: "HTTP/1.1 without Host", raw: "GET / HTTP/1.1\r\n\r\n", wantStatus: 400},
		{name: "two Hosts", raw: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", wantStatus: 400},
		{name: "no version", raw: "GET /\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "two spaces", raw: "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "a space in the target", raw: "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "a method that is not a token", raw: "G(ET / HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "HTTP/2.0", raw: "GET / HTTP/2.0\r\nHost: x\r\n\r\n", wantStatus: 505},
		{name: "not HTTP", raw: "GET / HTX/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "asterisk form", raw: "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "authority form", raw: "CONNECT knockwall:80 HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "ftp URL", raw: "GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "a fragment", raw: "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "a byte over 0x7e in the target", raw: "GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "bad percent-encoding", raw: "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "bad query", raw: "GET /?a=%zz HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "a field without a colon", raw: "GET / HTTP/1.1\r\nHost x\r\n\r\n", wantStatus: 400},
		{name: "a space before the colon", raw: "GET / HTTP/1.1\r\nHost : x\r\n\r\n", wantStatus: 400},
		{name: "obs-fold", raw: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", wantStatus: 400},
		{name: "a control character in a value", raw: "GET / HTTP/1.1\r\nHost: x\x01\r\n\r\n", wantStatus: 400},
		{name: "a bare CR", raw: "GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n", wantStatus: 400},
		{name: "a NUL", raw: "GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "a negative Content-Length", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", wantStatus: 400},
		{name: "a signed Content-Length", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nx", wantStatus: 400},
		{name: "a Content-Length list", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\nx", wantStatus: 400},
		{name: "an empty Content-Length", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", wantStatus: 400},
		{name: "Content-Length fields disagree", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", wantStatus: 400},
		{name: "a Content-Length that overflows", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", wantStatus: 400},
		{name: "a body over the limit", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n0123456789abcdefg", wantStatus: 413},
		{name: "a body shorter than said", raw: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabc", wantStatus: 400},
		{name: "chunked", raw: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", wantStatus: 411},
		{name: "Transfer-Encoding and Content-Length", raw: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\nx", wantStatus: 400},
		{name: "Expect other than 100-continue", raw: "POST / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", wantStatus: 417},
		{name: "a request line over the limit", raw: "GET /" + long + " HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 431},
		{name: "a field over the limit", raw: "GET / HTTP/1.1\r\nHost: x\r\nX: " + long + "\r\n\r\n", wantStatus: 431},
		{name: "a head one byte over the limit", raw: "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 257-len("GET / HTTP/1.1\r\nHost: x\r\nX: \r\n\r\n")) + "\r\n\r\n", wantStatus: 431},
		{name: "many fields over the limit", raw: "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("A: b\r\n", 60) + "\r\n", wantStatus: 431},
		{name: "empty lines over the limit", raw: strings.Repeat("\r\n", 200) + "GET / HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A reader smaller than the limit: long lines come in pieces.
			br := bufio.NewReaderSize(strings.NewReader(tt.raw), 16)
			r, err := ReadRequest(br, testLimits)
			var se *StatusError
			switch {
			case tt.wantStatus != 0:
				if !errors.As(err, &se) || se.Status != tt.wantStatus {
					t.Fatalf("err %v, want a %d", err, tt.wantStatus)
				}
				if se.Msg == "" || !strings.HasPrefix(se.Error(), strconv.Itoa(tt.wantStatus)+" "+StatusText(tt.wantStatus)+": ") {
					t.Errorf("error without a message: %v", se)
				}
				return
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("ReadRequest: %v", err)
			}
			if r.Method != tt.wantMethod || r.Path != tt.wantPath || string(r.Body) != tt.wantBody {
				t.Errorf("got %q %q body %q; want %q %q body %q", r.Method, r.Path, r.Body, tt.wantMethod, tt.wantPath, tt.wantBody)
			}
			if tt.wantQuery == nil {
				tt.wantQuery = url.Values{}
			}
			if !reflect.DeepEqual(r.Query, tt.wantQuery) {
				t.Errorf("query %v, want %v", r.Query, tt.wantQuery)
			}
		})
	}
}

func TestHeaderGet(t *testing.T) {
	h := Header{{"Content-Type", "a"}, {"content-type", "b"}, {"X", ""}}
	if h.Get("CONTENT-TYPE") != "a" || h.Get("X") != "" || h.Get("Y") != "" {
		t.Errorf("Get: %q %q %q", h.Get("CONTENT-TYPE"), h.Get("X"), h.Get("Y"))
	}
}
