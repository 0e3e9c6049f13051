// Package fwknoptest reads the test vectors that the real fwknop client made
// (fwknop/testdata/vectors.txt, written by fwknop/testdata/make-vectors.sh),
// for the tests of every package that judges fwknop packets.
package fwknoptest

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Vector is one packet the client made, and how.
type Vector struct {
	Name, Expect, Cmd string
	Made              int64 // Unix seconds
	Packet            []byte
}

// Load reads a vectors file: blocks of "key: value" lines (name, expect,
// cmd, made, packet) separated by blank lines; lines starting with # are
// comments.
func Load(path string) ([]Vector, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var vs []Vector
	var v Vector
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if line == "" {
			if v.Name != "" {
				vs = append(vs, v)
			}
			v = Vector{}
			continue
		}
		k, val, _ := strings.Cut(line, ": ")
		switch k {
		case "name":
			v.Name = val
		case "expect":
			v.Expect = val
		case "cmd":
			v.Cmd = val
		case "made":
			if v.Made, err = strconv.ParseInt(val, 10, 64); err != nil {
				return nil, fmt.Errorf("%s: %s: made: %w", path, v.Name, err)
			}
		case "packet":
			v.Packet = []byte(val)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if v.Name != "" {
		vs = append(vs, v)
	}
	return vs, nil
}
