package metrics

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parse reads text as Prometheus reads the format 0.0.4: with
// prometheus/common's parser, names held to the classic character set.
func parse(text []byte) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(bytes.NewReader(text))
}

// scraped is a prometheus.Collector of what a Collector writes, parsed
// back by expfmt: so client_golang's testutil, its pedantic registry
// (duplicates, label consistency, UTF-8, help) and promlint check the
// text that is served, not a model of it.
type scraped struct {
	t *testing.T
	c *Collector
}

func (s scraped) families() []*dto.MetricFamily {
	mfs, err := parse(s.c.AppendText(nil))
	if err != nil {
		// Describe and Collect run on the registry's goroutines.
		s.t.Errorf("the exposition does not parse: %v", err)
		return nil
	}
	out := make([]*dto.MetricFamily, 0, len(mfs))
	for _, mf := range mfs {
		out = append(out, mf)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return cmp.Compare(a.GetName(), b.GetName()) })
	return out
}

// labelNames are the label names of a family's first sample, in order.
func labelNames(mf *dto.MetricFamily) []string {
	var names []string
	if len(mf.GetMetric()) > 0 {
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			names = append(names, lp.GetName())
		}
	}
	return names
}

func desc(mf *dto.MetricFamily) *prometheus.Desc {
	return prometheus.NewDesc(mf.GetName(), mf.GetHelp(), labelNames(mf), nil)
}

func (s scraped) Describe(ch chan<- *prometheus.Desc) {
	for _, mf := range s.families() {
		ch <- desc(mf)
	}
}

func (s scraped) Collect(ch chan<- prometheus.Metric) {
	for _, mf := range s.families() {
		d := desc(mf)
		names := labelNames(mf)
	samples:
		for _, m := range mf.GetMetric() {
			values := make([]string, len(names))
			if len(m.GetLabel()) != len(names) {
				ch <- prometheus.NewInvalidMetric(d, fmt.Errorf("%s: labels %v, the family's first sample has %v", mf.GetName(), m.GetLabel(), names))
				continue
			}
			for i, lp := range m.GetLabel() {
				if lp.GetName() != names[i] {
					ch <- prometheus.NewInvalidMetric(d, fmt.Errorf("%s: label %s where the family's first sample has %s", mf.GetName(), lp.GetName(), names[i]))
					continue samples
				}
				values[i] = lp.GetValue()
			}
			var metric prometheus.Metric
			var err error
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				metric, err = prometheus.NewConstMetric(d, prometheus.CounterValue, m.GetCounter().GetValue(), values...)
			case dto.MetricType_GAUGE:
				metric, err = prometheus.NewConstMetric(d, prometheus.GaugeValue, m.GetGauge().GetValue(), values...)
			default:
				err = fmt.Errorf("%s: type %s; knockwall writes counters and gauges only", mf.GetName(), mf.GetType())
			}
			if err != nil {
				metric = prometheus.NewInvalidMetric(d, err)
			}
			ch <- metric
		}
	}
}
