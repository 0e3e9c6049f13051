//go:build linux && knockwall_omit_qr

package main

import "errors"

// errQROmitted: the router builds (-tags knockwall_omit_qr) leave the QR
// encoder out to stay within their size budget (docs/decisions.md).
var errQROmitted = errors.New("this build leaves the QR code out (the mips and mipsle router builds, -tags knockwall_omit_qr): the settings above are complete; run `knockwall config fwknop-client --qr` with an amd64, arm64 or armv7 build for the QR code")

func qrText(string) (string, error) { return "", errQROmitted }
