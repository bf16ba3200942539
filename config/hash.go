package config

import (
	"crypto/sha256"
	"encoding/hex"
)

// hash fingerprints the effective config: the first 16 hex digits of the
// SHA-256 of what /config shows (with the hash itself empty), secrets
// [REDACTED].
//
// No secret value goes in, so the published hash (/config, /health,
// X-Config-Hash, `validate`) is no offline oracle: folding secrets in let a
// word list recover admin.token. A secret counts only by where it is set
// and where its variable is used; so replicas that load one file agree,
// and a rotated secret (a new token in the same ${VAR}) keeps the hash.
// The hash digests nothing that /config does not show to the same reader
// (/health and /config are GETs on the same admin listener): only where a
// secret's value also sits in a plain field does /config, and so the
// hash, change with it, and /config shows that redaction anyway.
func (c *Config) hash() string {
	sum := sha256.Sum256(c.redactedJSON(""))
	return hex.EncodeToString(sum[:])[:16]
}
