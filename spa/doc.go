// Package spa implements knockwall's single-packet authorization: a token that
// carries a timestamp, a random nonce, the service it asks for and optionally
// the source address it is bound to, authenticated with HMAC-SHA256 under a
// shared key. docs/spa.md describes the format byte by byte.
//
// The package also derives rotating knock sequences from a key and a time
// period, and keeps the bounded replay cache of nonces already accepted.
// Parsing and verification do not allocate: they run on the verdict path.
package spa
