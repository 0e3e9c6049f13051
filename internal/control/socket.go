package control

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrInUse: a live process answers on the socket's path.
var ErrInUse = errors.New("control socket in use")

// probeTimeout bounds the connect that tells a live socket from a stale
// one.
const probeTimeout = time.Second

// Listen binds the control socket at path, mode 0600, creating its
// directory (0700) if missing. A socket file left by a run that died is
// replaced; one a live process answers on is not (ErrInUse), nor is a file
// that is not a socket. Closing the listener removes the file.
//
// The mode is set right after the bind; a connection made in between
// still meets the peer-credential check, which is what keeps others out.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket; remove it or set control.socket to another path", path)
		}
		c, err := net.DialTimeout("unix", path, probeTimeout)
		switch {
		case err == nil:
			c.Close()
			return nil, fmt.Errorf("control socket %s: %w: another knockwall is running (knockwall status --socket %s); stop it first, or set control.socket to another path", path, ErrInUse, path)
		case errors.Is(err, syscall.ECONNREFUSED):
			// Nobody listens: left by a run that did not stop cleanly.
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("control socket %s: remove the stale socket: %w", path, err)
			}
		default:
			return nil, fmt.Errorf("control socket %s: cannot tell whether it is in use: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	return ln, nil
}

// Peer is who is on the other end of a connection, as the kernel says
// (SO_PEERCRED: the credentials at connect time).
type Peer struct {
	UID, GID uint32
	PID      int32
}

func (p Peer) who() string { return fmt.Sprintf("uid=%d pid=%d", p.UID, p.PID) }

type peerKey struct{}

// peerResult is the peer of a connection, or why it is unknown.
type peerResult struct {
	p   Peer
	err error
}

func withPeer(ctx context.Context, p Peer, err error) context.Context {
	return context.WithValue(ctx, peerKey{}, peerResult{p, err})
}

func peerFrom(ctx context.Context) (Peer, error) {
	r, ok := ctx.Value(peerKey{}).(peerResult)
	if !ok {
		return Peer{}, errors.New("not a unix socket connection")
	}
	return r.p, r.err
}

// peerOf is the peer of a unix socket connection, as the kernel recorded
// it at connect.
func peerOf(c net.Conn) (Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, fmt.Errorf("not a unix socket connection (%T)", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if cerr != nil {
		return Peer{}, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}, nil
}
