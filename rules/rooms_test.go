package rules_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/knockwall/knockwall/rules"
)

// TestPlainRooms: services with a plain sequence share half of max_grants
// evenly unless they set plain_grants; together the rooms must leave room
// for the grants a spoofer cannot make; first_connect_within defaults to
// DefaultFirstConnectWithin.
func TestPlainRooms(t *testing.T) {
	svc := func(seq []string, plain int) rules.ServiceConfig {
		s := rules.ServiceDefaults()
		s.Ports, s.Sequence, s.PlainGrants = []int{22}, seq, plain
		return s
	}
	for _, tt := range []struct {
		name      string
		maxGrants int
		services  map[string]rules.ServiceConfig
		want      map[string]int // plain_grants after compiling
		wantErr   string         // a key in the error
	}{
		{"one plain service: half", 100, map[string]rules.ServiceConfig{"a": svc([]string{"7000", "8000"}, 0)}, map[string]int{"a": 50}, ""},
		{"two: a quarter each", 100, map[string]rules.ServiceConfig{"a": svc([]string{"7000", "8000"}, 0), "b": svc([]string{"7001", "8001"}, 0)}, map[string]int{"a": 25, "b": 25}, ""},
		{"one set, the other shares what is left of the half", 100, map[string]rules.ServiceConfig{"a": svc([]string{"7000", "8000"}, 10), "b": svc([]string{"7001", "8001"}, 0)}, map[string]int{"a": 10, "b": 40}, ""},
		{"at least one each", 2, map[string]rules.ServiceConfig{"a": svc([]string{"7000", "8000"}, 0)}, map[string]int{"a": 1}, ""},
		{"rooms that fill the table", 10, map[string]rules.ServiceConfig{"a": svc([]string{"7000", "8000"}, 10)}, nil, "tracker.max_grants"},
		{"a one-grant table has no room to share", 1, map[string]rules.ServiceConfig{"a": svc([]string{"7000", "8000"}, 0)}, nil, "tracker.max_grants"},
		{"plain_grants without a sequence", 100, map[string]rules.ServiceConfig{"a": spaWithPlainGrants()}, nil, "services.a.plain_grants"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := rules.Defaults()
			c.Tracker.MaxGrants = tt.maxGrants
			c.Services = tt.services
			set, err := rules.Compile(c, keyReader(t))
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, rules.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range set.Services {
				if s.PlainGrants != tt.want[s.Name] || s.FirstConnectWithin != rules.DefaultFirstConnectWithin {
					t.Errorf("%s: plain_grants %d, first_connect_within %v; want %d, %v", s.Name, s.PlainGrants, s.FirstConnectWithin, tt.want[s.Name], rules.DefaultFirstConnectWithin)
				}
			}
		})
	}
}

// spaWithPlainGrants is an SPA-only service that sets plain_grants.
func spaWithPlainGrants() rules.ServiceConfig {
	s := spaService()
	s.PlainGrants = 3
	return s
}
