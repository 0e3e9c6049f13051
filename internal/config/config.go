// Package config loads knockwall's configuration: a YAML file (or the
// embedded example) with environment overrides, into a rules.Config.
//
// The YAML is read strictly: a key the model does not have, or one given
// twice, is an error naming the key and its line. Every leaf key may then
// be overridden as KNOCKWALL_ + the key path in upper case with _ for .,
// keys under each named service included; the list of keys comes from the
// yaml tags of rules.Config, so a new field is a new key and a new variable
// with nothing else to change. The result is decoded with mapstructure
// (strings from the environment become numbers, lists and durations) onto
// rules.Defaults and rules.ServiceDefaults. docs/decisions.md says why these
// libraries.
package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"strings"

	"github.com/go-viper/mapstructure/v2"

	"github.com/knockwall/knockwall/rules"
)

// tagKey is the struct tag that names a key of rules.Config.
const tagKey = "yaml"

// servicesKey is the map of named services.
const servicesKey = "services"

// maxFile bounds the configuration file read.
const maxFile = 4 << 20

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
	// Variables names the variable that set each key of Overrides.
	Variables map[string]string
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
	raw := rules.ExampleYAML
	if !src.Example {
		b, mode, err := readFile(src.Path)
		if err != nil {
			return rules.Config{}, rep, err
		}
		raw, rep.Path, rep.Mode = b, src.Path, mode
	}
	c, p, err := decodeEnv(raw, environ)
	rep.Overrides, rep.Variables = p.overrides, p.fromEnv
	if err != nil && !src.Example {
		err = fmt.Errorf("%s: %w", src.Path, err)
	}
	return c, rep, err
}

// ErrFileMode is returned for a configuration file that group or others
// may write, or that another user owns: whoever can change it decides what
// knockwall opens (firewall.manage: false, a sequence of their own) at the
// next reload.
var ErrFileMode = errors.New("config file may be changed by others")

// readFile reads the configuration file at path, following a symlink, and
// refuses one that is not a regular file, that group or others may write,
// or that neither root nor the user running knockwall owns. The refusals
// wrap rules.ErrInvalid (exit status 2): nothing starts or reloads.
func readFile(path string) ([]byte, fs.FileMode, error) {
	// O_NONBLOCK: no blocking on a FIFO before the regular-file check.
	f, err := os.OpenFile(path, os.O_RDONLY|openNonblock, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, 0, fmt.Errorf("config file %s does not exist (use -c FILE, KNOCKWALL_CONFIG, or --example): %w", path, rules.ErrInvalid)
		}
		return nil, 0, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("read config: %w", err)
	}
	if err := checkMode(path, st, os.Geteuid()); err != nil {
		return nil, 0, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, 0, fmt.Errorf("read config: %w", err)
	}
	if len(b) > maxFile {
		return nil, 0, fmt.Errorf("config file %s is larger than %d bytes: %w", path, maxFile, rules.ErrInvalid)
	}
	return b, st.Mode().Perm(), nil
}

// checkMode refuses a file that is not regular, that group or others may
// write, or that neither root nor euid owns.
func checkMode(path string, st fs.FileInfo, euid int) error {
	if st.IsDir() {
		return fmt.Errorf("read config: %s is a directory", path)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("config file %s is not a regular file (%s): %w", path, st.Mode().Type(), rules.ErrInvalid)
	}
	if perm := st.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("config file %s has mode %04o: %w: group or others may write it (run: chmod 600 %s): %w", path, perm, ErrFileMode, path, rules.ErrInvalid)
	}
	if uid, ok := fileOwner(st); ok && uid != 0 && int(uid) != euid {
		return fmt.Errorf("config file %s (mode %04o) is owned by uid %d: %w: it must belong to root or to the user running knockwall (uid %d) (run: chown root %s): %w",
			path, st.Mode().Perm(), uid, ErrFileMode, euid, path, rules.ErrInvalid)
	}
	return nil
}

// Decode decodes YAML bytes with environment overrides.
func Decode(raw []byte, environ []string) (rules.Config, error) {
	c, _, err := decodeEnv(raw, environ)
	return c, err
}

// decodeEnv parses raw, lays the overrides of environ on it and decodes
// the result; the parsed document says which keys the environment set.
func decodeEnv(raw []byte, environ []string) (rules.Config, parsed, error) {
	p, err := parseYAML(raw)
	if err != nil {
		return rules.Config{}, p, err
	}
	if p.overrides, err = p.applyEnv(environ); err != nil {
		return rules.Config{}, p, err
	}
	c, err := p.decode()
	if err != nil {
		return rules.Config{}, p, err
	}
	return c, p, nil
}

// decode turns the tree into a Config: each key left out takes its value
// from rules.Defaults, each service's from rules.ServiceDefaults.
func (p *parsed) decode() (rules.Config, error) {
	c := rules.Defaults()
	top := maps.Clone(p.tree)
	delete(top, servicesKey)
	if err := p.decodeInto(top, &c, ""); err != nil {
		return rules.Config{}, err
	}
	if svcs, ok := p.tree[servicesKey].(tree); ok {
		c.Services = make(map[string]rules.ServiceConfig, len(svcs))
		for name, v := range svcs {
			sc := rules.ServiceDefaults()
			if err := p.decodeInto(v, &sc, servicesKey+"."+name); err != nil {
				return rules.Config{}, err
			}
			c.Services[name] = sc
		}
	}
	return c, nil
}

// decodeInto decodes in onto out, a struct pointer, as mapstructure does
// converting as the environment needs: a string becomes a duration, a comma-separated
// string a list, and a scalar the field's type (weakly typed). A failure
// is a KeyError naming the key under prefix and where its value came from.
func (p *parsed) decodeInto(in any, out any, prefix string) error {
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToWeakSliceHookFunc(","),
		),
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		ZeroFields:       true,
		TagName:          tagKey,
		Result:           out,
	})
	if err != nil {
		return err
	}
	err = dec.Decode(in)
	if err == nil {
		return nil
	}
	var de *mapstructure.DecodeError
	if !errors.As(err, &de) {
		return fmt.Errorf("%s: %w", oneLine(err), rules.ErrInvalid)
	}
	key := join(prefix, de.Name())
	msg := oneLine(de.Unwrap())
	leaf := trimIndex(key)
	if v, ok := p.fromEnv[leaf]; ok {
		msg += " (from " + v + ")"
	} else if l, ok := p.lines[leaf]; ok {
		msg += fmt.Sprintf(" (line %d)", l)
	}
	return &rules.KeyError{Key: key, Msg: msg}
}

// trimIndex drops list indexes from the end of a key path: ports[0] is
// the key ports.
func trimIndex(key string) string {
	for strings.HasSuffix(key, "]") {
		i := strings.LastIndexByte(key, '[')
		if i < 0 || strings.Trim(key[i+1:len(key)-1], "0123456789") != "" {
			break
		}
		key = key[:i]
	}
	return key
}
