package metrics

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/knockwall/knockwall/internal/cluster"
)

// TestClusterMetrics: the cluster's families, present only with a
// cluster, and lint-clean.
func TestClusterMetrics(t *testing.T) {
	st := sampleStats()
	if text := string(NewCollector(fakeSource{st}).AppendText(nil)); strings.Contains(text, "cluster") {
		t.Fatal("cluster metrics without a cluster")
	}
	st.Cluster = &cluster.Stats{Name: "a", LastSync: time.Unix(1764151200, 0),
		Peers:      []cluster.PeerStatus{{Name: "b", State: "alive"}, {Name: "c", State: "dead"}, {Name: "d", State: "dead"}},
		GrantsSent: 5, GrantsReceived: 6, TokensReceived: 7, RefusedKey: 8, RefusedSkew: 9, RefusedService: 10}
	text := string(NewCollector(fakeSource{st}).AppendText(nil))
	for _, want := range []string{
		`knockwall_cluster_peers{state="alive"} 1`, `knockwall_cluster_peers{state="dead"} 2`, `knockwall_cluster_peers{state="suspect"} 0`,
		`knockwall_cluster_sent_total{kind="grant"} 5`, `knockwall_cluster_received_total{kind="grant"} 6`,
		`knockwall_cluster_received_total{kind="token"} 7`, `knockwall_cluster_refused_total{reason="key"} 8`,
		`knockwall_cluster_refused_total{reason="skew"} 9`, `knockwall_cluster_refused_total{reason="service"} 10`,
		`knockwall_cluster_last_sync_seconds 1.7641512e+09`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("no line %q", want)
		}
	}
	problems, err := promlint.New(bytes.NewReader([]byte(text))).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}
