package rules

import (
	"math"
	"testing"
)

func TestSweepBits(t *testing.T) {
	for _, tt := range []struct {
		seq         []string
		sweep, kbit float64 // kbit: OrderBits
	}{
		{[]string{"7000"}, 17, 0},
		{[]string{"7000", "7001", "7002"}, 16 + math.Log2(3) + 1, math.Log2(6)},                // an ascending scan
		{[]string{"9002", "9001", "9000"}, 16 + math.Log2(3) + 1, math.Log2(6)},                // a descending one
		{[]string{"7000/udp", "8000/udp", "9000/udp"}, 16 + math.Log2(2001) + 1, math.Log2(6)}, // a round step
		{[]string{"7000", "8000", "9000/udp"}, 16 + math.Log2(2001) + 3, math.Log2(6)},         // mixed protocols
		{[]string{"7000", "7000/udp"}, 16 + 0 + 2, 1},                                          // step 0
		{[]string{"7113", "52611/udp", "18842"}, 16*3 + 3, math.Log2(6)},                       // no pattern
		{[]string{"7113", "52611", "18842", "52611"}, 16*4 + 1, math.Log2(24.0 / 2)},           // a knock twice
	} {
		var seq []Knock
		for _, s := range tt.seq {
			k, err := ParseKnock(s)
			if err != nil {
				t.Fatal(err)
			}
			seq = append(seq, k)
		}
		if got := SweepBits(seq); math.Abs(got-tt.sweep) > 1e-9 {
			t.Errorf("SweepBits(%v) = %v, want %v", tt.seq, got, tt.sweep)
		}
		if got := OrderBits(seq); math.Abs(got-tt.kbit) > 1e-9 {
			t.Errorf("OrderBits(%v) = %v, want %v", tt.seq, got, tt.kbit)
		}
	}
	if got := RotatingBits(4, 1000); math.Abs(got-4*math.Log2(1000)) > 1e-9 {
		t.Errorf("RotatingBits = %v", got)
	}
}
