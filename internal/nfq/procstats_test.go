package nfq

import "testing"

func TestParseKernelStats(t *testing.T) {
	in := []byte("    0  12345     3 2   256    10     2   999  1\n" +
		"    1  12346     1 2   256     5     0   500  1\n" +
		"    7  12347   100 2   256  1000  1000  9999  1\n")
	tests := []struct {
		name         string
		first, count int
		want         KernelStats
	}{
		{"queue 0", 0, 1, KernelStats{Waiting: 3, QueueDropped: 10, UserDropped: 2}},
		{"queues 0-1", 0, 2, KernelStats{Waiting: 4, QueueDropped: 15, UserDropped: 2}},
		{"another daemon's queue is not ours", 2, 4, KernelStats{}},
		{"queue 7", 7, 1, KernelStats{Waiting: 100, QueueDropped: 1000, UserDropped: 1000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseKernelStats(in, tt.first, tt.count)
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	if _, err := parseKernelStats([]byte("0 1 2 3 4 x 6 7 1\n"), 0, 1); err == nil {
		t.Fatal("a garbled line parsed")
	}
	if got, err := parseKernelStats(nil, 0, 1); err != nil || got != (KernelStats{}) {
		t.Fatalf("empty: %+v %v", got, err)
	}
}
