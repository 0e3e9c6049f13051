package rules

import (
	"bytes"
	"testing"

	"github.com/knockwall/knockwall/spa"
)

// TestRotateSpaceIsTheDerivations: the count rotateSpace makes is the number
// of sequences spa.RotatingSequence really draws: sampled over many periods,
// a small range yields exactly that many distinct sequences, none with a
// port equal to the one before it (and some with a port equal to one
// further back, which the count includes).
func TestRotateSpaceIsTheDerivations(t *testing.T) {
	k, err := spa.NewKey(bytes.Repeat([]byte{7}, spa.MinKeySize))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ length, span int }{{1, 5}, {2, 4}, {3, 3}, {4, 3}, {3, 2}} {
		seen := map[[4]uint16]bool{}
		skipOne := false
		for idx := range int64(4000) {
			seq := spa.RotatingSequence(k, "ssh", idx, tt.length, 100, uint16(100+tt.span-1), nil)
			var key [4]uint16
			copy(key[:], seq)
			for i := 1; i < len(seq); i++ {
				if seq[i] == seq[i-1] {
					t.Fatalf("length %d over %d: period %d draws %v, a port equal to the one before it", tt.length, tt.span, idx, seq)
				}
				if i > 1 && seq[i] == seq[i-2] {
					skipOne = true
				}
			}
			seen[key] = true
		}
		if got, want := uint64(len(seen)), rotateSpace(tt.length, tt.span); got != want {
			t.Errorf("length %d over %d: %d distinct sequences drawn, rotateSpace says %d", tt.length, tt.span, got, want)
		}
		if tt.length >= 3 && !skipOne {
			t.Errorf("length %d over %d: no sequence repeats a port two back; the count assumes it can", tt.length, tt.span)
		}
	}
}

func TestRotateSpace(t *testing.T) {
	for _, tt := range []struct {
		length, span int
		want         uint64
	}{
		{0, 10, 0}, {1, 0, 0}, {1, 1, 1}, {2, 1, 0}, {3, 2, 2}, {3, 3, 12}, {2, 65535, 65535 * 65534},
		{32, 65535, 1 << 63}, // saturates
	} {
		if got := rotateSpace(tt.length, tt.span); got != tt.want {
			t.Errorf("rotateSpace(%d, %d) = %d, want %d", tt.length, tt.span, got, tt.want)
		}
	}
}
