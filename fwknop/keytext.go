package fwknop

import "encoding/base64"

// Base64 returns the Rijndael key and the HMAC key in standard base64, as
// `fwknop --key-gen` prints them (KEY_BASE64, HMAC_KEY_BASE64): what a
// fwknop client (command line, Android, iOS) is set up with.
func (k *Key) Base64() (enc, mac string) {
	return base64.StdEncoding.EncodeToString(k.enc), base64.StdEncoding.EncodeToString(k.mac)
}
