//go:build linux && !knockwall_omit_qr

package main

import (
	"fmt"

	"github.com/skip2/go-qrcode"
)

// qrText renders s as a QR code in text, for a terminal.
func qrText(s string) (string, error) {
	code, err := qrcode.New(s, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("qr code: %w", err)
	}
	return code.ToSmallString(false), nil
}
