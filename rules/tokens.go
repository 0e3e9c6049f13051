package rules

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/knockwall/knockwall/spa"
)

func loadKey(key, path string, o compileOpts) (*spa.Key, error) {
	if o.readKey == nil {
		return nil, keyErr(key, "key files cannot be read here")
	}
	k, err := o.readKey(path)
	if err != nil {
		return nil, keyErr(key, "%v", err)
	}
	return k, nil
}

func compileSPA(base string, c SPAConfig, o compileOpts) (*SPA, error) {
	base += ".spa"
	if c.KeyFile == "" {
		if len(c.KeyFiles) > 0 || c.Port != 0 || c.RequireSource {
			return nil, keyErr(base+".key_file", "spa needs a key_file")
		}
		return nil, nil
	}
	if c.Port < 0 || c.Port > 65535 {
		return nil, keyErr(base+".port", "must be from 1 to 65535 (or 0 for SYN tokens only), got %d", c.Port)
	}
	if c.MaxSkew < time.Second || c.MaxSkew > MaxSkewLimit {
		return nil, keyErr(base+".max_skew", "must be from 1s to %s, got %s", MaxSkewLimit, c.MaxSkew)
	}
	a := &SPA{Port: uint16(c.Port), MaxSkew: c.MaxSkew, RequireSource: c.RequireSource}
	for i, path := range append([]string{c.KeyFile}, c.KeyFiles...) {
		key := base + ".key_file"
		if i > 0 {
			key = fmt.Sprintf("%s.key_files[%d]", base, i-1)
		}
		k, err := loadKey(key, path, o)
		if err != nil {
			return nil, err
		}
		if a.Key(k.ID) != nil {
			return nil, keyErr(key, "key id %d is already used by another key of this service (same key twice?)", k.ID)
		}
		a.Keys = append(a.Keys, k)
	}
	return a, nil
}

func compileFwknop(base string, c FwknopConfig, o compileOpts) (*Fwknop, error) {
	base += ".fwknop"
	if c.KeyFile == "" {
		if c.RequireSource {
			return nil, keyErr(base+".key_file", "fwknop needs a key_file")
		}
		return nil, nil
	}
	if c.Port < 1 || c.Port > 65535 {
		return nil, keyErr(base+".port", "must be from 1 to 65535, got %d", c.Port)
	}
	if c.MaxAge < time.Second || c.MaxAge > MaxSkewLimit {
		return nil, keyErr(base+".max_age", "must be from 1s to %s, got %s", MaxSkewLimit, c.MaxAge)
	}
	if o.readFwknop == nil {
		return nil, keyErr(base+".key_file", "key files cannot be read here")
	}
	k, err := o.readFwknop(c.KeyFile)
	if err != nil {
		return nil, keyErr(base+".key_file", "%v", err)
	}
	return &Fwknop{Port: uint16(c.Port), Key: k, MaxAge: c.MaxAge, RequireSource: c.RequireSource}, nil
}

func compileRotate(base string, c ServiceConfig, o compileOpts) (*Rotate, error) {
	base += ".rotate"
	r := c.Rotate
	if r.Length == 0 {
		if len(r.Range) > 0 || r.KeyFile != "" {
			return nil, keyErr(base+".length", "rotate needs a length")
		}
		return nil, nil
	}
	if r.Length < 1 || r.Length > MaxSequence {
		return nil, keyErr(base+".length", "must be from 1 to %d, got %d", MaxSequence, r.Length)
	}
	if r.Period < time.Second || r.Period%time.Second != 0 {
		return nil, keyErr(base+".period", "must be whole seconds, at least 1s, got %s", r.Period)
	}
	if len(r.Range) != 2 || r.Range[0] < 1 || r.Range[1] > 65535 || r.Range[0] >= r.Range[1] {
		return nil, keyErr(base+".range", "must be [low, high] with 1 <= low < high <= 65535, got %v", r.Range)
	}
	if err := checkRotateSpace(base, r.Length, r.Range[1]-r.Range[0]+1); err != nil {
		return nil, err
	}
	path := r.KeyFile
	if path == "" {
		path = c.SPA.KeyFile
	}
	if path == "" {
		return nil, keyErr(base+".key_file", "rotate needs a key_file (or spa.key_file)")
	}
	k, err := loadKey(base+".key_file", path, o)
	if err != nil {
		return nil, err
	}
	return &Rotate{Key: k, Length: r.Length, Period: r.Period, Lo: uint16(r.Range[0]), Hi: uint16(r.Range[1])}, nil
}

// rotateSpace is the number of sequences spa.RotatingSequence can draw:
// length ports from span, none equal to the one before it, so span for the
// first and span-1 for each next: span·(span-1)^(length-1). It saturates at
// 2^63.
func rotateSpace(length, span int) uint64 {
	if length < 1 || span < 1 {
		return 0
	}
	const limit = 1 << 63
	n := uint64(span)
	for range length - 1 {
		if span-1 == 0 {
			return 0
		}
		if n > limit/uint64(span-1) {
			return limit
		}
		n *= uint64(span - 1)
	}
	return n
}

// rotateBits is log2 of rotateSpace, for messages.
func rotateBits(length, span int) float64 {
	if rotateSpace(length, span) == 0 {
		return 0
	}
	return math.Log2(float64(span)) + float64(length-1)*math.Log2(float64(span-1))
}

// checkRotateSpace refuses a rotating sequence of length over span ports
// whose space is below 2^MinRotateBits, saying what would be enough.
func checkRotateSpace(base string, length, span int) error {
	if rotateSpace(length, span) >= 1<<MinRotateBits {
		return nil
	}
	var fixes []string
	// The narrowest range enough for this length, if a range of ports can
	// be: rotateSpace grows with the span.
	const maxSpan = 65535
	if w := 2 + sort.Search(maxSpan-1, func(i int) bool { return rotateSpace(length, i+2) >= 1<<MinRotateBits }); w <= maxSpan {
		fixes = append(fixes, fmt.Sprintf("widen range to %d ports", w))
	}
	for l := length + 1; l <= MaxSequence; l++ {
		if rotateSpace(l, span) >= 1<<MinRotateBits {
			fixes = append(fixes, fmt.Sprintf("lengthen to %d", l))
			break
		}
	}
	fix := strings.Join(fixes, " or ")
	if fix == "" {
		fix = "widen range and lengthen"
	}
	return keyErr(base+".range", "length %d over %d ports is %.1f bits of possible sequences (no port repeats the one before it), below %d; %s",
		length, span, rotateBits(length, span), MinRotateBits, fix)
}
