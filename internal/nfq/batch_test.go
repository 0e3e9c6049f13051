package nfq

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"

	nfqueue "github.com/florianl/go-nfqueue/v2"
)

// sent records verdict messages as "accept 3", "batch drop 7", "mark 5".
type sent []string

func (s *sent) SetVerdict(id uint32, v int) error {
	*s = append(*s, fmt.Sprintf("%s %d", name(v), id))
	return nil
}

func (s *sent) SetVerdictBatch(id uint32, v int) error {
	*s = append(*s, fmt.Sprintf("batch %s %d", name(v), id))
	return nil
}

func (s *sent) SetVerdictWithOption(id uint32, v int, _ ...nfqueue.VerdictOption) error {
	*s = append(*s, fmt.Sprintf("mark %s %d", name(v), id))
	return nil
}

func name(v int) string {
	if v == nfqueue.NfAccept {
		return "accept"
	}
	return "drop"
}

// TestBatching feeds packets with the verdicts given by their payload's first
// byte ('a' accept, 'd' drop, 'm' accept with a mark) and says after which
// packet the socket is empty; it checks the verdict messages sent. A batch
// verdict covers every packet up to its id, so a batch must never span a
// packet with another verdict.
func TestBatching(t *testing.T) {
	for _, tt := range []struct {
		name  string
		pkts  string       // verdict per packet, ids 1, 2, …
		empty map[int]bool // ids after which the socket holds nothing more
		want  []string
	}{
		{"idle: each answered at once", "aaa", map[int]bool{1: true, 2: true, 3: true},
			[]string{"accept 1", "accept 2", "accept 3"}},
		{"a busy run goes in one batch", "aaaa", map[int]bool{4: true},
			[]string{"batch accept 4"}},
		{"a change of verdict ends the run", "aadd", map[int]bool{4: true},
			[]string{"batch accept 2", "batch drop 4"}},
		{"a marked verdict goes alone, after the run before it", "aama", map[int]bool{4: true},
			[]string{"batch accept 2", "mark accept 3", "accept 4"}},
		{"drop, accept, drop", "dad", map[int]bool{3: true},
			[]string{"drop 1", "accept 2", "drop 3"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out sent
			q := &Queue{out: &out, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			var id uint32
			q.queued = func() bool { return !tt.empty[int(id)] }
			h := func(pkt []byte, _ uint32) Verdict {
				switch pkt[0] {
				case 'a':
					return Verdict{Accept: true}
				case 'm':
					return Verdict{Accept: true, SetMark: true, Mark: 1}
				}
				return Verdict{}
			}
			for i, v := range []byte(tt.pkts) {
				id = uint32(i + 1)
				pid, payload := id, []byte{v}
				q.handle(nfqueue.Attribute{PacketID: &pid, Payload: &payload}, h)
			}
			if !slices.Equal(out, tt.want) {
				t.Fatalf("sent %q, want %q", out, tt.want)
			}
		})
	}
}

// TestBatchBound: a run never grows past maxBatch.
func TestBatchBound(t *testing.T) {
	var out sent
	q := &Queue{out: &out, log: slog.New(slog.NewTextHandler(io.Discard, nil)), queued: func() bool { return true }}
	h := func([]byte, uint32) Verdict { return Verdict{Accept: true} }
	for i := range 2*maxBatch + 1 {
		pid, payload := uint32(i+1), []byte{0}
		q.handle(nfqueue.Attribute{PacketID: &pid, Payload: &payload}, h)
	}
	want := []string{fmt.Sprintf("batch accept %d", maxBatch), fmt.Sprintf("batch accept %d", 2*maxBatch)}
	if !slices.Equal(out, want) || q.run != 1 {
		t.Fatalf("sent %q with %d pending, want %q with 1 pending", out, q.run, want)
	}
	q.mu.Lock()
	q.flushLocked()
	q.mu.Unlock()
	if out[len(out)-1] != fmt.Sprintf("accept %d", 2*maxBatch+1) {
		t.Fatalf("the stale run was not flushed: %q", out)
	}
}
