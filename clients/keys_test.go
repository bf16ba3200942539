package clients

import (
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIssueKeepsCommentsAndLooksUpByHash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	orig := "# our clients\nclients:\n  # the first one\n  - { id: old, tier: free, key_sha256: \"" + strings.Repeat("ab", 32) + "\" }\n# trailing note\n"
	if err := os.WriteFile(path, []byte(orig), 0o640); err != nil {
		t.Fatal(err)
	}
	key, err := Issue(path, "acme", "paid")
	if err != nil {
		t.Fatal(err)
	}
	if len(key) < 43 || strings.ContainsAny(key, "+/=") {
		t.Errorf("key %q: want ≥ 32 bytes, base64url", key)
	}
	text, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(text), orig) || strings.Contains(string(text), key) {
		t.Errorf("file after Issue:\n%s\nwant the original text kept and no key", text)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 kept", st.Mode().Perm())
	}
	k, err := Load(path, func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if c := k.Lookup(key); c == nil || c.ID != "acme" || c.Tier != "paid" {
		t.Errorf("Lookup(new key) = %+v", c)
	}
	if k.Lookup(key+"x") != nil || k.Lookup("") != nil {
		t.Error("Lookup found a client for a wrong key")
	}
	if _, err := Issue(path, "acme", "free"); err == nil {
		t.Error("a second acme was issued")
	}
}

func TestParseReportsEveryProblemWithItsLine(t *testing.T) {
	text := `clients:
  - { id: a, tier: free, key_sha256: "` + strings.Repeat("0", 64) + `" }
  - { id: a, tier: gold, key_sha256: "nothex" }
  - { tier: free, key_sha256: "` + strings.Repeat("0", 64) + `", colour: red }
`
	_, err := Parse("k.yaml", []byte(text), func(t string) bool { return t == "free" })
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`k.yaml:3: clients[1].key_sha256: want the key's SHA-256`,
		`k.yaml:3: clients[1].id: id "a" is already used by clients[0]`,
		`k.yaml:3: clients[1].tier: no tier named "gold"`,
		`k.yaml:4: clients[2].colour: unknown key`,
		`k.yaml:4: clients[2].id: every client needs an id`,
		`k.yaml:4: clients[2].key_sha256: the same key as client "a"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "nothex") {
		t.Error("the bad value is echoed (it could be a pasted key)")
	}
}

func TestFromRequest(t *testing.T) {
	h := http.Header{"Authorization": {"bearer  k1 "}, "X-Api-Key": {"k2"}}
	if got := FromRequest(h, "Authorization"); got != "k1" {
		t.Errorf("Authorization: %q", got)
	}
	if got := FromRequest(h, "x-api-key"); got != "k2" {
		t.Errorf("X-Api-Key: %q", got)
	}
	if got := FromRequest(http.Header{"Authorization": {"Basic abc"}}, "Authorization"); got != "" {
		t.Errorf("Basic: %q, want none", got)
	}
}

// RemoveKnown drops the values of any key header that are known keys, in
// whatever header clients.header names, and keeps every other value.
func TestRemoveKnown(t *testing.T) {
	h := Hash("k1")
	k, err := Parse("k.yaml", []byte("clients:\n  - { id: a, tier: free, disabled: true, key_sha256: \""+hex.EncodeToString(h[:])+"\" }\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	hdr := http.Header{"X-Api-Key": {"k1", "other", " k1 "}, "Authorization": {"Bearer k1"}}
	k.RemoveKnown(hdr, "x-api-key")
	if got := hdr["X-Api-Key"]; len(got) != 1 || got[0] != "other" {
		t.Errorf("X-Api-Key after RemoveKnown = %q, want [other]", got)
	}
	if hdr.Get("Authorization") != "Bearer k1" {
		t.Error("a header other than clients.header was touched")
	}
	k.RemoveKnown(hdr, "Authorization")
	if _, ok := hdr["Authorization"]; ok {
		t.Error("the only Authorization value is a known key and is still there")
	}
	var none *Keys
	none.RemoveKnown(hdr, "X-Api-Key") // no keys file: nothing to remove, no panic
}
