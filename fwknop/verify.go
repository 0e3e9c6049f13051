package fwknop

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/netip"
	"strconv"
)

// Errors a packet may be refused with, in the order Verify and Check test
// them. The verdict path reports them as reasons; none of them changes what
// the sender sees.
var (
	ErrMalformed   = errors.New("fwknop: not an fwknop spa packet")                             // length, alphabet, fields
	ErrNoHMAC      = errors.New("fwknop: packet has no hmac")                                   // sent without --use-hmac
	ErrBadHMAC     = errors.New("fwknop: bad hmac")                                             // forged, tampered, or another key
	ErrDecrypt     = errors.New("fwknop: decryption failed")                                    // right HMAC key, wrong Rijndael key
	ErrDigest      = errors.New("fwknop: bad or unsupported digest")                            // inner digest wrong or not SHA-256
	ErrMessageType = errors.New("fwknop: message type not accepted")                            // command or NAT request
	ErrStale       = errors.New("fwknop: timestamp too old")                                    // older than max_age
	ErrFuture      = errors.New("fwknop: timestamp in future")                                  // newer than max_age
	ErrAllowIP     = errors.New("fwknop: access asked for another address")                     // allow-IP is not 0.0.0.0 nor the source
	ErrUnbound     = errors.New("fwknop: allow-ip 0.0.0.0 refused (fwknop.require_source)")     // the service requires the client to name its address
	ErrPort        = errors.New("fwknop: access asked for a port the service does not protect") // or a udp port
	ErrReplay      = errors.New("fwknop: packet already used")                                  // replayed
	ErrReplayFull  = errors.New("fwknop: replay cache full")                                    // refused to stay safe; see ReplayCache
)

// Access is one proto/port entry of an access message.
type Access struct {
	Proto uint8 // ProtoTCP or ProtoUDP
	Port  uint16
}

func (a Access) String() string {
	p := "tcp/"
	if a.Proto == ProtoUDP {
		p = "udp/"
	}
	return p + strconv.Itoa(int(a.Port))
}

// Request is a verified access request. It holds copies, not pointers into
// the packet or into Verify's scratch memory, so the caller may keep it.
type Request struct {
	// Timestamp is the client's clock when it made the packet, unix seconds.
	Timestamp int64
	// MessageType is MsgAccess or MsgClientTimeoutAccess.
	MessageType uint8
	// AllowIP is the address the client asks access for (fwknop -a); the
	// unspecified address 0.0.0.0 (fwknop -s) means the packet's source.
	AllowIP netip.Addr
	// ClientTimeout is the access time the client asks for (fwknop
	// --fw-timeout), seconds; 0 when it asks for none.
	ClientTimeout uint32
	// ReplayKey is the SHA-256 of the packet as received.
	ReplayKey [ReplayKeySize]byte

	access  [MaxAccess]Access
	nAccess uint8
	user    [MaxUser]byte
	nUser   uint8
}

// Access returns the proto/port entries asked for, in packet order. The
// slice points into r.
func (r *Request) Access() []Access { return r.access[:r.nAccess] }

// User returns the username the client put in the packet (its login name,
// or fwknop -U). It is not authenticated beyond the key: anyone holding the
// key can write any name.
func (r *Request) User() string { return string(r.user[:r.nUser]) }

// Verify checks packet b, the payload of a UDP datagram or TCP SYN, under k
// and fills r. It checks, in order and refusing at the first failure: the
// length and the base64 alphabet (ErrMalformed), that an HMAC is there
// (ErrNoHMAC), the HMAC in constant time (ErrBadHMAC), the decryption and
// its padding (ErrDecrypt), the inner digest (ErrDigest), the message type
// (ErrMessageType) and the fields. It never panics; it does not allocate
// before the HMAC has passed. It does not apply policy: see Request.Check.
func (k *Key) Verify(b []byte, r *Request) error {
	*r = Request{}
	n := len(b)
	if n < MinPacketSize || n > MaxPacketSize || !isBase64(b) || string(b[:len(saltPrefix)]) == saltPrefix {
		// fwknopd refuses a packet that keeps the prefix: it adds the
		// prefix only when missing, so such a packet would be a second
		// spelling of one it accepted. Here it would fail the HMAC anyway.
		return ErrMalformed
	}
	textLen := n - MACLen + len(saltPrefix)
	if !cipherTextLen(textLen) {
		if cipherTextLen(n + len(saltPrefix)) {
			return ErrNoHMAC
		}
		return ErrMalformed
	}
	st := k.states.Get().(*state)
	defer k.states.Put(st)

	// The HMAC covers the base64 text with the prefix put back, and is
	// compared as base64 text: fwknop does both, and comparing text rather
	// than decoded bytes leaves no spare bits in the last character for a
	// second spelling of an accepted packet.
	text := st.text[:textLen]
	copy(text, saltPrefix)
	copy(text[len(saltPrefix):], b[:n-MACLen])
	st.h.Reset()
	st.h.Write(text)
	var mac [MACLen]byte
	base64.RawStdEncoding.Encode(mac[:], st.h.Sum(st.sum[:0]))
	if !hmac.Equal(mac[:], b[n-MACLen:]) {
		return ErrBadHMAC
	}

	// Everything below runs only for packets made with the HMAC key.
	err := k.open(st, text, r)
	// Leave no plaintext in pooled memory.
	clear(st.ct[:])
	clear(st.tmp[:])
	if err != nil {
		*r = Request{}
		return err
	}
	r.ReplayKey = sha256.Sum256(b)
	return nil
}

// open decodes and decrypts the ciphertext text and parses the plaintext
// into r.
func (k *Key) open(st *state, text []byte, r *Request) error {
	m, err := base64.RawStdEncoding.Decode(st.ct[:], text)
	if err != nil || m < 2*blockSize || m%blockSize != 0 || string(st.ct[:len(saltMagic)]) != saltMagic {
		return ErrMalformed
	}
	pt, err := k.decrypt(st, st.ct[len(saltMagic):m])
	if err != nil {
		return err
	}
	return parsePlaintext(pt, st, r)
}

// decrypt decrypts salt||ciphertext in place and returns the plaintext
// without its padding. It allocates twice, in crypto/aes.NewCipher and
// cipher.NewCBCDecrypter: the AES key differs for every packet.
func (k *Key) decrypt(st *state, b []byte) ([]byte, error) {
	salt, body := b[:saltLen], b[saltLen:]
	var key [32]byte
	k.deriveKeyIV(salt, &key, &st.iv)
	blk, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, ErrDecrypt
	}
	cipher.NewCBCDecrypter(blk, st.iv[:]).CryptBlocks(body, body)
	// PKCS#7. This runs only after the HMAC passed, so its timing tells an
	// attacker nothing he could not compute himself; it still reads every
	// padding byte and branches once.
	p := int(body[len(body)-1])
	if p < 1 || p > blockSize {
		return nil, ErrDecrypt
	}
	var bad byte
	for i := len(body) - p; i < len(body); i++ {
		bad |= body[i] ^ byte(p)
	}
	if bad != 0 {
		return nil, ErrDecrypt
	}
	pt := body[:len(body)-p]
	// fwknop's own test of a good decryption: 16 digits and a colon.
	if len(pt) <= randLen || pt[randLen] != ':' || !allDigits(pt[:randLen]) {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// deriveKeyIV is OpenSSL's EVP_BytesToKey with MD5 and one round, as fwknop
// uses it (lib/cipher_funcs.c rij_salt_and_iv): D1 = MD5(key||salt),
// Di = MD5(Di-1||key||salt); the AES-256 key is D1||D2 and the IV is D3.
func (k *Key) deriveKeyIV(salt []byte, key *[32]byte, iv *[blockSize]byte) {
	var buf [md5.Size + MaxKeySize + saltLen]byte
	n := copy(buf[md5.Size:], k.enc)
	n += copy(buf[md5.Size+n:], salt)
	d := md5.Sum(buf[md5.Size : md5.Size+n])
	copy(key[:md5.Size], d[:])
	copy(buf[:md5.Size], d[:])
	d = md5.Sum(buf[:md5.Size+n])
	copy(key[md5.Size:], d[:])
	copy(buf[:md5.Size], d[:])
	d = md5.Sum(buf[:md5.Size+n])
	copy(iv[:], d[:])
}

// maxFields is the most ':'-separated fields before the digest: random,
// user, timestamp, version, type, message, server auth, client timeout.
const maxFields = 8

// Field indexes.
const (
	fRand = iota
	fUser
	fTime
	fVersion
	fType
	fMsg
)

// parsePlaintext checks the digest and the fields of the decrypted text:
//
//	random:user:timestamp:version:type:message[:server_auth][:client_timeout]:digest
func parsePlaintext(pt []byte, st *state, r *Request) error {
	for _, c := range pt {
		if c < 0x20 || c > 0x7e { // fwknop requires isprint
			return ErrMalformed
		}
	}
	last := -1
	for i := len(pt) - 1; i >= 0; i-- {
		if pt[i] == ':' {
			last = i
			break
		}
	}
	if last < 0 {
		return ErrMalformed
	}
	enc, digest := pt[:last], pt[last+1:]
	if len(digest) != DigestLen { // MD5, SHA-1, SHA-384, SHA-512: not sent by default
		return ErrDigest
	}
	sum := sha256.Sum256(enc)
	var want [DigestLen]byte
	base64.RawStdEncoding.Encode(want[:], sum[:])
	if !hmac.Equal(want[:], digest) {
		return ErrDigest
	}

	var f [maxFields][]byte
	nf := 0
	for start := 0; ; {
		end := start
		for end < len(enc) && enc[end] != ':' {
			end++
		}
		if nf == maxFields {
			return ErrMalformed
		}
		f[nf] = enc[start:end]
		nf++
		if end == len(enc) {
			break
		}
		start = end + 1
	}
	if nf <= fMsg {
		return ErrMalformed
	}
	if len(f[fRand]) != randLen || !allDigits(f[fRand]) || !inRange(f[fUser], 1, maxUserB64) || !inRange(f[fTime], 1, maxTimestamp) || !allDigits(f[fTime]) ||
		!inRange(f[fVersion], 1, maxVersion) || !inRange(f[fType], 1, maxMsgType) || !allDigits(f[fType]) {
		return ErrMalformed
	}
	typ := atoi(f[fType])
	if typ >= msgLast {
		return ErrMalformed
	}
	if typ != MsgAccess && typ != MsgClientTimeoutAccess {
		return ErrMessageType
	}
	r.MessageType = uint8(typ)
	// What follows the message: [server_auth] for an access message,
	// [server_auth:]timeout for a client-timeout one.
	rest := f[fMsg+1 : nf]
	if typ == MsgClientTimeoutAccess {
		if len(rest) < 1 || len(rest) > 2 {
			return ErrMalformed
		}
		t := rest[len(rest)-1]
		if !inRange(t, 1, maxTimestamp) || !allDigits(t) || atoi(t) > maxTimeout {
			return ErrMalformed
		}
		r.ClientTimeout = uint32(atoi(t))
		rest = rest[:len(rest)-1]
	}
	if len(rest) > 1 {
		return ErrMalformed
	}
	if len(rest) == 1 {
		// Server auth: a legacy field fwknopd does not act on. Checked
		// for form, then ignored.
		if !inRange(rest[0], 1, maxAuthB64) {
			return ErrMalformed
		}
		if _, err := base64.RawStdEncoding.Decode(st.tmp[:], rest[0]); err != nil {
			return ErrMalformed
		}
	}
	r.Timestamp = atoi(f[fTime])

	u := f[fUser]
	nu, err := base64.RawStdEncoding.Decode(st.tmp[:], u)
	if err != nil || nu < 1 || !validUser(st.tmp[:nu]) {
		return ErrMalformed
	}
	r.nUser = uint8(copy(r.user[:], st.tmp[:nu]))

	if !inRange(f[fMsg], 1, maxMsgB64) {
		return ErrMalformed
	}
	nm, err := base64.RawStdEncoding.Decode(st.tmp[:], f[fMsg])
	if err != nil {
		return ErrMalformed
	}
	return parseAccess(st.tmp[:nm], r)
}

// parseAccess parses "a.b.c.d,proto/port[,proto/port]..." with proto tcp
// or udp (fwknop's validate_access_msg lets nothing else through).
func parseAccess(msg []byte, r *Request) error {
	comma := 0
	for comma < len(msg) && msg[comma] != ',' {
		comma++
	}
	ip, ok := parseIPv4(msg[:comma])
	if !ok || comma == len(msg) {
		return ErrMalformed
	}
	r.AllowIP = ip
	for rest := msg[comma+1:]; ; {
		end := 0
		for end < len(rest) && rest[end] != ',' {
			end++
		}
		a, ok := parseProtoPort(rest[:end])
		if !ok || int(r.nAccess) == MaxAccess {
			return ErrMalformed
		}
		r.access[r.nAccess] = a
		r.nAccess++
		if end == len(rest) {
			return nil
		}
		rest = rest[end+1:]
	}
}

func parseProtoPort(b []byte) (Access, bool) {
	if len(b) < 5 || b[3] != '/' {
		return Access{}, false
	}
	var a Access
	switch string(b[:3]) {
	case "tcp":
		a.Proto = ProtoTCP
	case "udp":
		a.Proto = ProtoUDP
	default:
		return Access{}, false
	}
	p := b[4:]
	if len(p) > 5 || !allDigits(p) {
		return Access{}, false
	}
	v := atoi(p)
	if v < 1 || v > 65535 {
		return Access{}, false
	}
	a.Port = uint16(v)
	return a, true
}

// parseIPv4 parses a dotted quad. Leading zeros are refused: inet_aton
// would read them as octal, and no client writes them.
func parseIPv4(b []byte) (netip.Addr, bool) {
	var ip [4]byte
	part := 0
	for i := 0; i < 4; i++ {
		start := part
		for part < len(b) && b[part] != '.' {
			part++
		}
		d := b[start:part]
		if len(d) < 1 || len(d) > 3 || !allDigits(d) || (len(d) > 1 && d[0] == '0') {
			return netip.Addr{}, false
		}
		v := atoi(d)
		if v > 255 {
			return netip.Addr{}, false
		}
		ip[i] = byte(v)
		if i < 3 {
			if part == len(b) {
				return netip.Addr{}, false
			}
			part++ // the dot
		}
	}
	if part != len(b) {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4(ip), true
}

// validUser is fwknop's validate_username: printable, without
// " / \ [ ] : ; | = , + * ? < >.
func validUser(u []byte) bool {
	for _, c := range u {
		if c < 0x20 || c > 0x7e {
			return false
		}
		switch c {
		case '"', '/', '\\', '[', ']', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>':
			return false
		}
	}
	return true
}

// cipherTextLen reports whether n base64 characters (without padding)
// decode to a whole number of AES blocks, at least the salt block and one
// more.
func cipherTextLen(n int) bool {
	if n%4 == 1 || n > maxText {
		return false
	}
	m := n / 4 * 3
	switch n % 4 {
	case 2:
		m++
	case 3:
		m += 2
	}
	return m >= 2*blockSize && m%blockSize == 0
}

func isBase64(b []byte) bool {
	for _, c := range b {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func inRange(b []byte, lo, hi int) bool { return len(b) >= lo && len(b) <= hi }

// atoi parses digits already checked by allDigits, at most 12 of them (so
// int64 holds them, on 32-bit routers too).
func atoi(b []byte) int64 {
	var v int64
	for _, c := range b {
		v = v*10 + int64(c-'0')
	}
	return v
}
