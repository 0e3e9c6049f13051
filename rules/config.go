package rules

import (
	_ "embed"
	"time"
)

// ExampleYAML is the example configuration shipped with the binary. It is what
// `knockwall run --example` runs and what `knockwall example` prints.
//
//go:embed example.yaml
var ExampleYAML []byte

// Config is the user's configuration as decoded from YAML and environment
// overrides. Field tags are the user's contract: keep the names.
type Config struct {
	Queue    QueueConfig              `mapstructure:"queue" yaml:"queue"`
	Firewall FirewallConfig           `mapstructure:"firewall" yaml:"firewall"`
	Log      LogConfig                `mapstructure:"log" yaml:"log"`
	Tracker  TrackerConfig            `mapstructure:"tracker" yaml:"tracker"`
	Services map[string]ServiceConfig `mapstructure:"services" yaml:"services"`
}

// QueueConfig selects the NFQUEUE numbers knockwall reads.
type QueueConfig struct {
	Num    int `mapstructure:"num" yaml:"num"`         // first queue number
	Count  int `mapstructure:"count" yaml:"count"`     // queues, one worker each
	MaxLen int `mapstructure:"max_len" yaml:"max_len"` // kernel queue length per queue
}

// FirewallConfig controls the static rules.
type FirewallConfig struct {
	// Manage makes `run` install the static rules on start and remove exactly
	// those on exit.
	Manage bool `mapstructure:"manage" yaml:"manage"`
	// AcceptMark and RejectMark are the packet mark values knockwall sets on
	// packets it accepts or wants rejected; MarkMask selects the bits of the
	// packet mark that belong to knockwall. Change them only if the host
	// already uses these mark bits.
	AcceptMark int `mapstructure:"accept_mark" yaml:"accept_mark"`
	RejectMark int `mapstructure:"reject_mark" yaml:"reject_mark"`
	MarkMask   int `mapstructure:"mark_mask" yaml:"mark_mask"`
}

// LogConfig selects the log level and format.
type LogConfig struct {
	Level  string `mapstructure:"level" yaml:"level"`
	Format string `mapstructure:"format" yaml:"format"`
}

// TrackerConfig bounds the per-source state.
type TrackerConfig struct {
	MaxPending int `mapstructure:"max_pending" yaml:"max_pending"`
	MaxGrants  int `mapstructure:"max_grants" yaml:"max_grants"`
}

// ServiceConfig is one protected service.
type ServiceConfig struct {
	Ports       []int         `mapstructure:"ports" yaml:"ports"`
	Sequence    []string      `mapstructure:"sequence" yaml:"sequence"`
	StepTimeout time.Duration `mapstructure:"step_timeout" yaml:"step_timeout"`
	OpenFor     time.Duration `mapstructure:"open_for" yaml:"open_for"`
	Closed      string        `mapstructure:"closed" yaml:"closed"`
}

// Defaults returns the values a key takes when neither the file nor the
// environment sets it. Services have no defaults beyond ServiceDefaults.
func Defaults() Config {
	return Config{
		Queue:    QueueConfig{Num: 0, Count: 1, MaxLen: DefaultQueueMaxLen},
		Firewall: FirewallConfig{Manage: true, AcceptMark: DefaultAcceptMark, RejectMark: DefaultRejectMark, MarkMask: DefaultMarkMask},
		Log:      LogConfig{Level: "info", Format: "text"},
		Tracker:  TrackerConfig{MaxPending: DefaultMaxPending, MaxGrants: DefaultMaxGrants},
	}
}

// ServiceDefaults are the values of a service's keys that the service leaves out.
func ServiceDefaults() ServiceConfig {
	return ServiceConfig{StepTimeout: DefaultStepTimeout, OpenFor: DefaultOpenFor, Closed: ClosedReject}
}
