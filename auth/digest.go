package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/breakwater-proxy/breakwater/config"
)

// Keyer fingerprints an OAuth2 block, secrets included, so that a reload
// can tell an unchanged block (keep the token) from one with a rotated
// secret (new source): config.Secret marshals as [REDACTED], so the
// config's own JSON cannot tell them apart.
//
// The fingerprint is an HMAC under a key made at random for this process
// and never shown: it stays in memory (a registry key), and even if it
// leaked it would be no offline oracle for the secret.
type Keyer struct{ key []byte }

// NewKeyer makes a Keyer with a fresh random key.
func NewKeyer() Keyer {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (Go 1.24+)
	return Keyer{key: k}
}

// Key is c's fingerprint; equal blocks (secrets included) give equal keys.
func (k Keyer) Key(c *config.OAuth2) string {
	type revealed struct {
		*config.OAuth2
		ClientSecret string `json:"client_secret"`
		Password     string `json:"password"`
	}
	b, _ := json.Marshal(revealed{OAuth2: c, ClientSecret: c.ClientSecret.Reveal(), Password: c.Password.Reveal()})
	m := hmac.New(sha256.New, k.key)
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil))
}
