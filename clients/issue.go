package clients

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/breakwater-proxy/breakwater/config"
)

// KeyBytes is the entropy of a key NewKey makes.
const KeyBytes = 32

// NewKey makes a random key: KeyBytes bytes from crypto/rand, base64url
// without padding (43 characters, safe in a header, a URL or a shell).
func NewKey() (string, error) {
	b := make([]byte, KeyBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "bwk_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// Issue makes a new key for client id of tier, appends its hash to the
// keys file at path (created, mode 0600, when missing) and returns the
// key, which is kept nowhere else. The file is rewritten atomically (a
// temporary file renamed over it, its mode kept) and its text, comments
// included, is kept as it was: the new client is one more line. A path
// that is a symlink is written through: its target is rewritten (next to
// it) and the link stays.
func Issue(path, id, tier string) (string, error) {
	if !validID(id) {
		return "", errors.New("-id: letters, digits and . _ - @ only, at most 128")
	}
	if !validID(tier) {
		return "", errors.New("-tier: a tier name from the config's tiers")
	}
	path, err := config.LinkTarget(path)
	if err != nil {
		return "", err
	}
	old, err := config.ReadRegular(path, maxFileSize)
	mode := fs.FileMode(0o600)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = []byte("# breakwater client keys: SHA-256 hashes only (breakwater keys new)\nclients:\n")
	case err != nil:
		return "", fmt.Errorf("%s: %w", path, err)
	default:
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
		}
	}
	cur, err := Parse(path, old, nil)
	if err != nil {
		return "", fmt.Errorf("the keys file has problems; fix them first:\n%w", err)
	}
	for _, c := range cur.clients {
		if c.ID == id {
			return "", fmt.Errorf("a client with id %q exists already (line %d)", id, c.line)
		}
	}
	key, err := NewKey()
	if err != nil {
		return "", err
	}
	h := Hash(key)
	text, err := appendClient(old, id, tier, hex.EncodeToString(h[:]))
	if err != nil {
		return "", err
	}
	// The result must read back with the new client in it, or nothing is written.
	if k, err := Parse(path, text, nil); err != nil || k.Lookup(key) == nil {
		return "", fmt.Errorf("cannot append to %s safely (is its clients list in an unusual form?)", path)
	}
	if err := config.WriteAtomic(path, text, mode); err != nil {
		return "", err
	}
	return key, nil
}

// appendClient adds one flow-mapping line to the file's clients list,
// indented like the list's other items.
func appendClient(text []byte, id, tier, hash string) ([]byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(text, &root); err != nil {
		return nil, err
	}
	list := clientsNode(&root)
	s := string(text)
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	indent := "  "
	switch {
	case list == nil:
		s += "clients:\n"
	case isNull(list):
		// "clients:" with nothing after it: items follow.
	case list.Kind == yaml.SequenceNode && list.Style&yaml.FlowStyle == 0 && len(list.Content) > 0:
		// clients is the file's only key (Parse insists), so the end of
		// the file is the end of the list, trailing comments or not.
		indent = strings.Repeat(" ", max(list.Content[0].Column-3, 0))
	default:
		return nil, errors.New("the clients list is written in flow style ([…]): write it one item a line to use keys new")
	}
	q := func(v string) string { b, _ := json.Marshal(v); return string(b) }
	s += fmt.Sprintf("%s- { id: %s, tier: %s, key_sha256: %q }\n", indent, q(id), q(tier), hash)
	return []byte(s), nil
}
