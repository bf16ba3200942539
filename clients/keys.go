// Package clients identifies the callers of a route by API key. The keys
// file holds no key, only each key's SHA-256 with the client's id, tier
// and a disabled flag:
//
//	clients:
//	  - { id: acme, tier: paid, key_sha256: "9f86d0…" }
//	  - { id: bob,  tier: free, key_sha256: "…", disabled: true }
//
// A presented key is hashed and the digest looked up in a map: no key is
// ever compared byte by byte (no timing leak), a stolen file gives no key,
// and a caller sending random keys grows nothing.
package clients

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/breakwater-proxy/breakwater/config"
)

// Client is one caller as the keys file names it.
type Client struct {
	ID       string
	Tier     string
	Disabled bool
	// Hash is the SHA-256 of the client's key; keep it out of output
	// (Short shows enough to tell two apart).
	Hash [sha256.Size]byte
	line int
}

// Short is the first 8 hex digits of the hash followed by "…".
func (c *Client) Short() string { return hex.EncodeToString(c.Hash[:4]) + "…" }

// Keys is a keys file, read. It is immutable; a reload reads a new one.
type Keys struct {
	File    string
	clients []*Client
	byHash  map[[sha256.Size]byte]*Client
}

// maxFileSize bounds what is read: a million clients are ~100 MiB.
const maxFileSize = 128 << 20

// Load reads and checks the keys file at path. knownTier, when not nil,
// says which tier names exist (the config's tiers); a client of another
// tier is a problem. The error is a config.Problems with FILE:LINE for
// each problem, like the main config's.
func Load(path string, knownTier func(string) bool) (*Keys, error) {
	data, err := config.ReadRegular(path, maxFileSize)
	switch {
	case errors.Is(err, config.ErrTooLarge):
		return nil, config.Problems{{File: path, Msg: fmt.Sprintf("keys file is larger than %d bytes", maxFileSize)}}
	case err != nil:
		return nil, config.Problems{{File: path, Msg: "cannot read keys file: " + err.Error()}}
	}
	return Parse(path, data, knownTier)
}

// Parse is Load on bytes already read.
func Parse(file string, data []byte, knownTier func(string) bool) (*Keys, error) {
	k := &Keys{File: file, byHash: map[[sha256.Size]byte]*Client{}}
	var ps config.Problems
	fail := func(line int, path, format string, args ...any) {
		ps = append(ps, config.Problem{File: file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, config.Problems{{File: file, Msg: "not YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	list := clientsNode(&root)
	if len(root.Content) > 0 {
		doc := root.Content[0]
		if doc.Kind != yaml.MappingNode {
			fail(doc.Line, "", "want a mapping with a clients list")
			return nil, ps
		}
		for i := 0; i+1 < len(doc.Content); i += 2 {
			if key := doc.Content[i]; key.Value != "clients" {
				fail(key.Line, key.Value, "unknown key (a keys file has only clients)")
			}
		}
	}
	if list != nil && list.Kind != yaml.SequenceNode && !isNull(list) {
		fail(list.Line, "clients", "want a list of { id, tier, key_sha256, disabled }")
		list = nil
	}
	ids := map[string]int{}
	for i, item := range listItems(list) {
		path := fmt.Sprintf("clients[%d]", i)
		if item.Kind != yaml.MappingNode {
			fail(item.Line, path, "want { id, tier, key_sha256, disabled }")
			continue
		}
		c := &Client{line: item.Line}
		var hashSeen, hashOK bool
		for j := 0; j+1 < len(item.Content); j += 2 {
			key, val := item.Content[j], item.Content[j+1]
			fpath := path + "." + key.Value
			if val.Kind != yaml.ScalarNode {
				fail(val.Line, fpath, "want a single value")
				continue
			}
			switch key.Value {
			case "id":
				c.ID = val.Value
			case "tier":
				c.Tier = val.Value
			case "disabled":
				if err := val.Decode(&c.Disabled); err != nil {
					fail(val.Line, fpath, "want true or false")
				}
			case "key_sha256":
				hashSeen = true
				// The hash is not secret, but a key pasted here by mistake
				// would be: the message never quotes the value.
				b, err := hex.DecodeString(strings.ToLower(val.Value))
				if err != nil || len(b) != sha256.Size {
					fail(val.Line, fpath, "want the key's SHA-256 as 64 hex digits (breakwater keys new writes it)")
					continue
				}
				copy(c.Hash[:], b)
				hashOK = true
			default:
				fail(key.Line, fpath, "unknown key (known keys: id, tier, key_sha256, disabled)")
			}
		}
		switch {
		case c.ID == "":
			fail(item.Line, path+".id", "every client needs an id (it is logged and forwarded)")
		case !validID(c.ID):
			fail(item.Line, path+".id", "an id is letters, digits and . _ - @ only, at most 128")
		default:
			if j, dup := ids[c.ID]; dup {
				fail(item.Line, path+".id", "id %q is already used by clients[%d]", c.ID, j)
			}
			ids[c.ID] = i
		}
		if c.Tier == "" {
			fail(item.Line, path+".tier", "every client needs a tier")
		} else if knownTier != nil && !knownTier(c.Tier) {
			fail(item.Line, path+".tier", "no tier named %q in the config's tiers", c.Tier)
		}
		if !hashSeen {
			fail(item.Line, path+".key_sha256", "every client needs key_sha256")
		}
		if !hashOK {
			continue
		}
		if other, dup := k.byHash[c.Hash]; dup {
			fail(item.Line, path+".key_sha256", "the same key as client %q", other.ID)
			continue
		}
		k.byHash[c.Hash] = c
		k.clients = append(k.clients, c)
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return k, nil
}

func clientsNode(root *yaml.Node) *yaml.Node {
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	doc := root.Content[0]
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value == "clients" {
			return doc.Content[i+1]
		}
	}
	return nil
}

func listItems(n *yaml.Node) []*yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	return n.Content
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func validID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-@", c)) {
			return false
		}
	}
	return true
}

// Hash is the SHA-256 of a key, as the keys file stores it.
func Hash(key string) [sha256.Size]byte { return sha256.Sum256([]byte(key)) }

// Lookup finds the client whose key this is, disabled or not; nil when
// none. The key is hashed and the digest looked up: the time taken does
// not depend on how much of the key matches any stored one, and nothing
// is remembered of keys that match none.
func (k *Keys) Lookup(key string) *Client {
	if k == nil || key == "" {
		return nil
	}
	return k.byHash[Hash(key)]
}

// List is every client, in file order.
func (k *Keys) List() []*Client {
	if k == nil {
		return nil
	}
	return slices.Clone(k.clients)
}

// Len is how many clients the file names.
func (k *Keys) Len() int {
	if k == nil {
		return 0
	}
	return len(k.clients)
}

// FromRequest reads the key a request presents in header: for
// Authorization, the credentials of a "Bearer" scheme (case-insensitive);
// for any other header, its raw value. "" when there is none.
func FromRequest(h http.Header, header string) string {
	return keyIn(h.Get(header), header)
}

// keyIn is the key one value of header presents ("" for none).
func keyIn(v, header string) string {
	if v == "" {
		return ""
	}
	if http.CanonicalHeaderKey(header) != "Authorization" {
		return strings.TrimSpace(v)
	}
	scheme, cred, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(cred)
}

// RemoveKnown removes from h every value of header that presents a key of
// k, disabled or not, and keeps the others: a client's key never leaves
// breakwater, even on a route that does not ask for one, while a
// credential meant for the upstream passes.
func (k *Keys) RemoveKnown(h http.Header, header string) {
	if k.Len() == 0 {
		return
	}
	name := http.CanonicalHeaderKey(header)
	vals := h[name]
	kept := slices.DeleteFunc(slices.Clone(vals), func(v string) bool { return k.Lookup(keyIn(v, name)) != nil })
	switch {
	case len(kept) == len(vals):
	case len(kept) == 0:
		delete(h, name)
	default:
		h[name] = kept
	}
}
