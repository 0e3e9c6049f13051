package fwknop

import "crypto/sha256"

// Sizes and limits of the fwknop SPA format, named after fwknop's own
// (lib/fko_limits.h, lib/fko.h, server/fwknopd_common.h) where one exists.
const (
	// MinPacketSize is fwknopd's MIN_SPA_DATA_SIZE: shorter payloads are
	// not SPA packets. A real one is over 180 bytes.
	MinPacketSize = 140
	// MaxPacketSize is fwknopd's MAX_SPA_PACKET_LEN.
	MaxPacketSize = 1500

	// MACLen is the length of the HMAC-SHA256 appended to a packet: 32
	// bytes in base64 without padding.
	MACLen = 43
	// DigestLen is the length of the inner SHA-256 digest, in base64
	// without padding.
	DigestLen = 43

	// saltPrefix is "Salted__" in base64, as far as its characters do not
	// depend on the salt that follows. The client strips it; the HMAC and
	// the ciphertext include it.
	saltPrefix = "U2FsdGVkX1"
	// saltMagic opens the decoded ciphertext, followed by an 8-byte salt.
	saltMagic = "Salted__"
	saltLen   = 8
	blockSize = 16 // AES

	// MinKeySize and MaxKeySize bound the Rijndael key (the "password" fed
	// to the OpenSSL key derivation), fwknop's RIJNDAEL_MIN_KEYSIZE and
	// RIJNDAEL_MAX_KEYSIZE. `fwknop --key-gen` makes 32 bytes.
	MinKeySize = 16
	MaxKeySize = 32
	// MinHMACKeySize and MaxHMACKeySize bound the HMAC key; `fwknop
	// --key-gen` makes 64 bytes, fwknop's MAX_KEY_LEN is 128.
	MinHMACKeySize = 16
	MaxHMACKeySize = 128

	// randLen is the length of the random field: 16 decimal digits.
	randLen = 16
	// Field limits from lib/fko_limits.h.
	maxUserB64   = 64 // MAX_SPA_USERNAME_SIZE, base64 characters
	maxTimestamp = 12 // MAX_SPA_TIMESTAMP_SIZE
	maxVersion   = 8  // MAX_SPA_VERSION_SIZE
	maxMsgType   = 2  // MAX_SPA_MESSAGE_TYPE_SIZE
	maxMsgB64    = 256
	maxAuthB64   = 64      // MAX_SPA_SERVER_AUTH_SIZE
	maxTimeout   = 1 << 16 // fwknop caps the client timeout at 2<<15 seconds

	// MaxUser is the longest username a packet can carry, decoded.
	MaxUser = maxUserB64 * 3 / 4
	// MaxAccess is the most proto/port entries an access message can hold:
	// 256 base64 characters decode to 192 bytes, "a.b.c.d," and then at
	// least six bytes ("tcp/1,") per entry.
	MaxAccess = 32

	// maxCipherText bounds the decoded ciphertext: the longest packet,
	// less its MAC, with the prefix put back.
	maxCipherText = (MaxPacketSize - MACLen + len(saltPrefix)) * 3 / 4
	// maxText bounds the base64 ciphertext with its prefix.
	maxText = MaxPacketSize - MACLen + len(saltPrefix)

	// ReplayKeySize is the size of a replay key: a SHA-256.
	ReplayKeySize = sha256.Size
	// ReplayWindowFactor times max_age is how long a packet is remembered:
	// a packet accepted at the edge of the window (timestamp max_age ahead
	// of the clock) stays inside it for up to 2×max_age.
	ReplayWindowFactor = 2
)

// Message types (fko_message_type_t). Only the two access requests are
// accepted; the others ask fwknopd to run commands or to set up NAT.
const (
	MsgCommand                     = 0
	MsgAccess                      = 1
	MsgNATAccess                   = 2
	MsgClientTimeoutAccess         = 3
	MsgClientTimeoutNATAccess      = 4
	MsgLocalNATAccess              = 5
	MsgClientTimeoutLocalNATAccess = 6
	msgLast                        = 7
)

// IP protocol numbers an access message may name.
const (
	ProtoTCP uint8 = 6
	ProtoUDP uint8 = 17
)
