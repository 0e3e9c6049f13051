//go:build !race

package fwknop

const raceEnabled = false
