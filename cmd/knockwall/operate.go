//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/knockwall/knockwall/internal/control"
	"github.com/knockwall/knockwall/internal/daemon"
	"github.com/knockwall/knockwall/internal/metrics"
	"github.com/knockwall/knockwall/rules"
)

// serverStopTimeout is how long requests under way may finish at a stop.
const serverStopTimeout = 2 * time.Second

// operate is what `run` serves besides the queues: the control socket and
// the metrics endpoint. Both are bound before the daemon changes anything,
// so a socket another daemon holds, or a metrics address taken, stops the
// start with the firewall untouched; both serve once the daemon is ready.
type operate struct {
	log    *slog.Logger
	ctlLn  *net.UnixListener // nil: control.socket is empty
	metLn  net.Listener      // nil: metrics.listen is empty
	token  []byte            // the metrics bearer token
	ctl    *control.Server
	met    *metrics.Server
	served sync.WaitGroup
	closed sync.Once
}

func openOperate(set *rules.Set, log *slog.Logger) (*operate, error) {
	o := &operate{log: log}
	if p := set.Control.Socket; p != "" {
		ln, err := control.Listen(p)
		if err != nil {
			return nil, err
		}
		o.ctlLn = ln
	}
	if a := set.Metrics.Listen; a != "" {
		tok, err := metricsToken(set)
		if err != nil {
			o.close()
			return nil, err
		}
		ln, err := metrics.Listen(a)
		if err != nil {
			o.close()
			return nil, err
		}
		o.metLn, o.token = ln, tok
	}
	return o, nil
}

// metricsToken reads metrics.token_file; a file that cannot be used is a
// configuration error (exit status 2).
func metricsToken(set *rules.Set) ([]byte, error) {
	tok, err := metrics.ReadToken(set.Metrics.TokenFile)
	if err != nil {
		return nil, &rules.KeyError{Key: "metrics.token_file", Msg: err.Error()}
	}
	return tok, nil
}

// serve starts answering, for d. The daemon calls it once, when ready.
func (o *operate) serve(d *daemon.Daemon) {
	if o.ctlLn != nil {
		o.ctl = control.New(control.Config{Daemon: d, Log: o.log})
		o.log.Info("control socket ready", "path", o.ctlLn.Addr().String())
		o.served.Add(1)
		go func() {
			defer o.served.Done()
			if err := o.ctl.Serve(o.ctlLn); err != nil {
				o.log.Error("control socket stopped", "err", err)
			}
		}()
	}
	if o.metLn != nil {
		met, err := metrics.NewServer(metrics.NewCollector(d), o.token, o.log)
		if err != nil {
			// openOperate read a token, or bound nothing.
			o.log.Error("metrics not served", "err", err)
			return
		}
		o.met = met
		o.log.Info("metrics ready", "listen", o.metLn.Addr().String(), "path", metrics.Path)
		o.served.Add(1)
		go func() {
			defer o.served.Done()
			if err := o.met.Serve(o.metLn); err != nil {
				o.log.Error("metrics stopped", "err", err)
			}
		}()
	}
}

// close stops serving and removes the control socket; only the first call
// does anything.
func (o *operate) close() { o.closed.Do(o.shutdown) }

func (o *operate) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), serverStopTimeout)
	defer cancel()
	if o.ctl != nil {
		o.ctl.Shutdown(ctx)
	}
	if o.met != nil {
		o.met.Shutdown(ctx)
	}
	o.served.Wait()
	// Closed here too when never served.
	if o.ctlLn != nil {
		o.ctlLn.Close()
	}
	if o.metLn != nil {
		o.metLn.Close()
	}
}

// writeOperate prints the control, metrics and state keys for config
// check.
func writeOperate(w io.Writer, s *rules.Set) {
	fmt.Fprintf(w, "control:\n  socket: %s\nmetrics:\n  listen: %s\n", orOff(s.Control.Socket), orOff(s.Metrics.Listen))
	if s.Metrics.Listen != "" {
		fmt.Fprintf(w, "  token_file: %s\n", strconv.Quote(s.Metrics.TokenFile))
	}
	fmt.Fprintf(w, "state:\n  file: %s\n", orOff(s.State.File))
}

func orOff(v string) string {
	if v == "" {
		return `""  # off`
	}
	return strconv.Quote(v)
}

// operateWarnings are the operate settings that expose something.
func operateWarnings(set *rules.Set) []string {
	if a := set.Metrics.Listen; a != "" && !metrics.IsLoopback(a) {
		return []string{fmt.Sprintf("metrics.listen %s is not a loopback address: the bearer token travels in clear (no TLS) to whoever is on the path; prefer 127.0.0.1 (and a tunnel)", a)}
	}
	return nil
}
