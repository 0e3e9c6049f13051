// Package fwknop verifies the single-packet authorization (SPA) packets of
// the stock fwknop client, so that a fwknopd user can replace the server
// with knockwall and keep every client and key. Only what the client sends
// by default with --use-hmac is accepted: Rijndael (AES-256-CBC), HMAC-SHA256
// and a SHA-256 inner digest; access requests, with or without a client
// timeout. The format below was written from fwknop's source (lib/fko_*.c,
// lib/cipher_funcs.c, server/incoming_spa.c) and checked against packets made
// by fwknop client 2.6.10 (FKO protocol version 3.0.0, Debian 12's
// fwknop-client 2.6.10-16), kept in testdata/.
//
// # Keys
//
// `fwknop --key-gen` prints two base64 keys:
//
//	KEY_BASE64: <32 random bytes>         the Rijndael key (16..32 bytes accepted)
//	HMAC_KEY_BASE64: <64 random bytes>    the HMAC key (16..128 bytes accepted)
//
// ReadKeyFile takes that output as a file (mode 0600), or the same two
// variables written "NAME value" as in access.conf. The passphrase forms KEY
// and HMAC_KEY are not supported.
//
// # The packet on the wire
//
// The packet is the whole payload of a UDP datagram (fwknop's default, port
// 62201) or of a TCP SYN (fwknop -P tcpraw). It is printable base64 text,
// standard alphabet, no '=' padding, no trailing newline, MinPacketSize to
// MaxPacketSize bytes:
//
//	off      len  field
//	0        n    C: base64 of the ciphertext, without its first 10 characters
//	n        43   M: base64 of HMAC-SHA256(HMAC key, "U2FsdGVkX1" || C)
//
// "U2FsdGVkX1" is the base64 of "Salted_" and two bits of the final '_',
// the same for every packet, so the client strips it and the server puts it
// back. A packet that starts with it is refused: it would be a second
// spelling of a packet. The MAC covers the base64 text with the prefix, and
// is compared as base64 text in constant time (hmac.Equal), before anything
// is decoded or decrypted. A packet whose length fits a ciphertext without M
// but not with one was sent without --use-hmac and is refused (ErrNoHMAC).
//
// # The ciphertext
//
// "U2FsdGVkX1" || C decodes to OpenSSL's salted format:
//
//	off  len   field
//	0    8     "Salted__"
//	8    8     salt, random
//	16   16·k  AES-256-CBC ciphertext, k ≥ 1, of the plaintext with PKCS#7 padding
//
// The AES key and IV come from the Rijndael key K and the salt S by
// OpenSSL's EVP_BytesToKey with MD5 and one iteration: D1 = MD5(K || S),
// D2 = MD5(D1 || K || S), D3 = MD5(D2 || K || S); key = D1 || D2, IV = D3.
// K is used as it is, whatever its length (fwknop's default CBC mode; the
// "legacy" IV mode, which pads K with '0', is not supported).
//
// # The plaintext
//
// The plaintext is printable ASCII, fields separated by ':':
//
//	random:user:timestamp:version:type:message[:server_auth][:timeout]:digest
//
//	random       16 decimal digits
//	user         base64 (no padding) of the client's user name, 1..64 characters
//	timestamp    decimal unix time, seconds, of the client's clock
//	version      the FKO protocol version, 1..8 characters ("3.0.0"); not checked
//	type         decimal message type: 1 access, 3 access with client timeout
//	             (the Android client sends 3); 0 command, 2, 4, 5, 6 NAT are
//	             refused (ErrMessageType)
//	message      base64 of "a.b.c.d,proto/port[,proto/port]...", proto tcp or
//	             udp, port 1..65535; a.b.c.d is the allow-IP (fwknop -a), or
//	             0.0.0.0 for "the packet's source" (fwknop -s)
//	server_auth  optional, base64; a legacy field fwknopd ignores, and so do we
//	timeout      type 3 only: decimal seconds (fwknop --fw-timeout), ≤ 65536
//	digest       base64 (no padding, 43 characters) of SHA-256 over every
//	             byte before the last ':'; other digest types (fwknop -m md5,
//	             sha1, sha384, sha512, sha3) are refused (ErrDigest)
//
// The NAT types carry a base64 NAT access field after the message; the
// command type carries "a.b.c.d,command" as its message.
//
// # What the server decides
//
// Verify checks the form, the HMAC, the decryption, the digest and the fields
// and returns a Request; it refuses with the first of ErrMalformed,
// ErrNoHMAC, ErrBadHMAC, ErrDecrypt, ErrDigest, ErrMessageType that applies.
// It does not allocate before the HMAC has passed, and allocates twice after
// (the per-packet AES key schedule and CBC state). Request.Check applies
// knockwall's policy: the timestamp within max_age (ErrStale, ErrFuture), the
// allow-IP 0.0.0.0 or the source itself (ErrAllowIP), every proto/port a TCP
// port the service protects (ErrPort), and the client timeout shortening,
// never lengthening, open_for. The caller then records Request.ReplayKey, the
// SHA-256 of the packet, in a ReplayCache until ForgetAt (2×max_age), which
// refuses a second sending (ErrReplay) and, when full of live keys, refuses
// new packets (ErrReplayFull) rather than forget one early.
//
// # What the real client sends with -P tcpraw
//
// Measured with fwknop 2.6.10 as root, sending to 127.0.0.1 in a private
// network namespace (testdata/tcpraw.pcap, TestTCPRaw): one IPv4 TCP segment
// with only SYN set, sequence number 1, window 32767, no TCP options, TTL
// 255, DF clear, a random source port, and the packet (no newline) as the
// segment's payload. The destination port is 62201 unless -p PORT is given.
// The TCP checksum is 0, not computed. Sent over a veth pair between two
// namespaces, with nf_conntrack_checksum=1 (the default), the receiving
// side's prerouting hook saw it as "ct state invalid" and its TCP stack
// dropped it without a RST: the queue rule must take such SYNs before any
// "ct state invalid drop", and knockwall must not insist on a good TCP
// checksum. The UDP mode sends the same text as a datagram's payload.
package fwknop
