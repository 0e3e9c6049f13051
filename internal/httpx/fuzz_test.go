package httpx

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// fuzzLimits are small, so the fuzzer reaches them.
var fuzzLimits = Limits{MaxHeaderBytes: 512, MaxBodyBytes: 64}

// FuzzReadRequest: no input panics the parser; what it refuses is a
// *StatusError with a status it knows, or the end of the input; what it
// accepts keeps the limits, and reads back the same from its own
// serialization. Seeds: testdata/fuzz/FuzzReadRequest.
func FuzzReadRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.NewReader(data)
		// A buffer smaller than the limits: long lines come in pieces.
		br := bufio.NewReaderSize(in, 16)
		r, err := ReadRequest(br, fuzzLimits)
		if err != nil {
			var se *StatusError
			switch {
			case errors.As(err, &se):
				if StatusText(se.Status) == "Status" || se.Status < 400 || se.Msg == "" {
					t.Fatalf("refused with %d %q", se.Status, se.Msg)
				}
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			default:
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		consumed := len(data) - in.Len() - br.Buffered()
		if head := consumed - len(r.Body); head > fuzzLimits.MaxHeaderBytes || len(r.Body) > fuzzLimits.MaxBodyBytes {
			t.Fatalf("read a head of %d bytes and a body of %d: over the limits", head, len(r.Body))
		}
		if !isToken(r.Method) || (r.Proto != "HTTP/1.1" && r.Proto != "HTTP/1.0") || !strings.HasPrefix(r.Path, "/") {
			t.Fatalf("accepted method %q proto %q path %q", r.Method, r.Proto, r.Path)
		}
		var again bytes.Buffer
		fmt.Fprintf(&again, "%s %s %s\r\n", r.Method, r.Target, r.Proto)
		for _, f := range r.Header {
			fmt.Fprintf(&again, "%s: %s\r\n", f.Name, f.Value)
		}
		again.WriteString("\r\n")
		if again.Len() > fuzzLimits.MaxHeaderBytes {
			return // bare LFs became CR LFs: over the limit now
		}
		again.Write(r.Body)
		r2, err := ReadRequest(bufio.NewReader(&again), fuzzLimits)
		if err != nil {
			t.Fatalf("the request's own serialization %q: %v", again.String(), err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("read back %+v, want %+v", r2, r)
		}
	})
}

// FuzzReadResponse: no answer panics the client's parser, and what it
// accepts keeps the body limit. Seeds: testdata/fuzz/FuzzReadResponse.
func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ReadResponse(bufio.NewReaderSize(bytes.NewReader(data), 16), 512, 64)
		if err != nil {
			return
		}
		if r.Status < 200 || r.Status > 999 || len(r.Body) > 64 {
			t.Fatalf("accepted status %d with a body of %d bytes", r.Status, len(r.Body))
		}
	})
}
