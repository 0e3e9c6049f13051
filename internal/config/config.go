// Package config loads knockwall's configuration: a YAML file (or the
// embedded example) with environment overrides, decoded by viper into a
// rules.Config. Every key may be overridden as KNOCKWALL_ + the key path in
// upper case with _ for ., including keys under a named service.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/knockwall/knockwall/rules"
)

// EnvPrefix prefixes every environment override.
const EnvPrefix = "KNOCKWALL"

// DefaultPath is read when neither -c nor KNOCKWALL_CONFIG names a file.
const DefaultPath = "/etc/knockwall/knockwall.yaml"

// Source says where the YAML comes from.
type Source struct {
	Path    string // a file; ignored when Example is set
	Example bool   // the embedded example
}

// Resolve picks the file: flag, else KNOCKWALL_CONFIG, else DefaultPath.
func Resolve(flagPath string, getenv func(string) string) string {
	if flagPath != "" {
		return flagPath
	}
	if p := getenv(EnvPrefix + "_CONFIG"); p != "" {
		return p
	}
	return DefaultPath
}

// Report says where a configuration came from, for the log: the keys the
// environment overrode and the file's permissions.
type Report struct {
	// Overrides are the keys set from KNOCKWALL_* variables, sorted.
	Overrides []string
	// Path and Mode are the file read (empty with the example).
	Path string
	Mode fs.FileMode
}

// Load reads src, applies environment overrides from environ (os.Environ()
// form) and decodes the result. Problems with the content wrap
// rules.ErrInvalid.
func Load(src Source, environ []string) (rules.Config, error) {
	c, _, err := LoadReport(src, environ)
	return c, err
}

// LoadReport is Load, and says what the environment overrode and what the
// file's permissions are.
func LoadReport(src Source, environ []string) (rules.Config, Report, error) {
	var rep Report
	var raw []byte
	if src.Example {
		raw = rules.ExampleYAML
	} else {
		b, err := os.ReadFile(src.Path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return rules.Config{}, rep, fmt.Errorf("config file %s does not exist (use -c FILE, KNOCKWALL_CONFIG, or --example): %w", src.Path, rules.ErrInvalid)
			}
			return rules.Config{}, rep, fmt.Errorf("read config: %w", err)
		}
		raw = b
		rep.Path = src.Path
		if fi, err := os.Stat(src.Path); err == nil {
			rep.Mode = fi.Mode().Perm()
		}
	}
	c, over, err := decodeEnv(raw, environ)
	rep.Overrides = over
	return c, rep, err
}

// Decode decodes YAML bytes with environment overrides.
func Decode(raw []byte, environ []string) (rules.Config, error) {
	c, _, err := decodeEnv(raw, environ)
	return c, err
}

func decodeEnv(raw []byte, environ []string) (rules.Config, []string, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(raw)); err != nil {
		return rules.Config{}, nil, fmt.Errorf("parse yaml: %s: %w", strings.Join(strings.Fields(err.Error()), " "), rules.ErrInvalid)
	}
	if err := unknownKeys(v.AllSettings(), reflect.TypeFor[rules.Config](), ""); err != nil {
		return rules.Config{}, nil, err
	}

	// Environment overrides: viper consults the environment only for keys
	// it knows, so every key, including each service's, is made known with
	// its default. The environment is read from environ, not the process,
	// so tests need not mutate it.
	env := envMap(environ)
	d := rules.Defaults()
	setDefaults(v, "", reflect.ValueOf(d))
	sd := rules.ServiceDefaults()
	for name := range v.GetStringMap("services") {
		setDefaults(v, "services."+name, reflect.ValueOf(sd))
	}
	var overrides []string
	for _, key := range v.AllKeys() {
		name := EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		if val, ok := env[name]; ok {
			v.Set(key, val)
			overrides = append(overrides, key)
		}
	}
	slices.Sort(overrides)

	var c rules.Config
	err := v.Unmarshal(&c, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
		dc.ZeroFields = true
	})
	if err != nil {
		return rules.Config{}, nil, fmt.Errorf("%s: %w", strings.Join(strings.Fields(err.Error()), " "), rules.ErrInvalid)
	}
	return c, overrides, nil
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string)
	for _, kv := range environ {
		if k, val, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix+"_") {
			m[k] = val
		}
	}
	return m
}

// setDefaults registers every leaf of the struct value rv under prefix.
func setDefaults(v *viper.Viper, prefix string, rv reflect.Value) {
	rt := rv.Type()
	for i := range rt.NumField() {
		f := rt.Field(i)
		tag := f.Tag.Get("mapstructure")
		key := tag
		if prefix != "" {
			key = prefix + "." + tag
		}
		switch {
		case f.Type.Kind() == reflect.Struct:
			setDefaults(v, key, rv.Field(i))
		case f.Type.Kind() == reflect.Map:
			// services: handled by the caller, per name
		case f.Type == reflect.TypeFor[time.Duration]():
			v.SetDefault(key, rv.Field(i).Interface().(time.Duration).String())
		default:
			v.SetDefault(key, rv.Field(i).Interface())
		}
	}
}

// unknownKeys names the first key in settings that the model does not have.
// Keys are checked in sorted order so the message is stable.
func unknownKeys(settings map[string]any, rt reflect.Type, prefix string) error {
	known := map[string]reflect.Type{}
	for i := range rt.NumField() {
		f := rt.Field(i)
		known[f.Tag.Get("mapstructure")] = f.Type
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		full := k
		if prefix != "" {
			full = prefix + "." + k
		}
		ft, ok := known[k]
		if !ok {
			return &rules.KeyError{Key: full, Msg: "unknown key"}
		}
		sub, isMap := settings[k].(map[string]any)
		switch {
		case ft.Kind() == reflect.Struct && isMap:
			if err := unknownKeys(sub, ft, full); err != nil {
				return err
			}
		case ft.Kind() == reflect.Map && isMap:
			names := make([]string, 0, len(sub))
			for n := range sub {
				names = append(names, n)
			}
			slices.Sort(names)
			for _, n := range names {
				svc, ok := sub[n].(map[string]any)
				if !ok {
					return &rules.KeyError{Key: full + "." + n, Msg: "must be a mapping of service keys"}
				}
				if err := unknownKeys(svc, ft.Elem(), full+"."+n); err != nil {
					return err
				}
			}
		case ft.Kind() == reflect.Struct || ft.Kind() == reflect.Map:
			return &rules.KeyError{Key: full, Msg: "must be a mapping"}
		}
	}
	return nil
}
