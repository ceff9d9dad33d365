// tilesclient is an independent C2SP tlog-tiles client for the auditlog tests, built on
// Go's golang.org/x/mod/sumdb/tlog and sumdb/note (none of auditlog's code). It knows only
// the log's base URL, its origin and its verifier key: it fetches /checkpoint and checks
// its signature, recomputes the tree's root from hash tiles fetched over HTTP, then for k
// random entries fetches their entry bundle, checks the entry hashes to the leaf the tiles
// hold and proves its inclusion. It prints a JSON summary and exits 1 on any failure.
//
//	tilesclient -url http://127.0.0.1:8080 -origin ORIGIN -vkey VKEY [-k 20] [-token T]
//
// Built without network access: GO111MODULE=off GOPATH=/usr/share/gocode go build
// (Debian's golang-golang-x-mod-dev).
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type client struct {
	base    string
	token   string
	http    *http.Client
	fetched int
	bytes   int
}

func (c *client) get(path string) ([]byte, error) {
	req, err := http.NewRequest("GET", c.base+"/"+path, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	c.fetched++
	c.bytes += len(body)
	return body, nil
}

// c2spPath turns Go's sumdb tile path (tile/8/L/N, tile/8/data/N) into the C2SP
// tlog-tiles one (tile/L/N, tile/entries/N): C2SP fixes the height at 8 and drops it.
func c2spPath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), "tile/8/")
	if strings.HasPrefix(p, "data/") {
		p = "entries/" + strings.TrimPrefix(p, "data/")
	}
	return "tile/" + p
}

// tileReader fetches hash tiles over HTTP; TileHashReader authenticates them against the
// tree before any hash is used.
type tileReader struct{ c *client }

func (r tileReader) Height() int { return 8 }

func (r tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		b, err := r.c.get(c2spPath(t))
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func (r tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// checkpoint parses a C2SP checkpoint body: origin, size, base64 root, then extensions.
// (tlog.ParseTree expects the Go sum database's own header instead.)
func checkpoint(text, origin string) (tlog.Tree, error) {
	lines := strings.Split(text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return tlog.Tree{}, fmt.Errorf("checkpoint body has %d lines", len(lines))
	}
	if lines[0] != origin {
		return tlog.Tree{}, fmt.Errorf("checkpoint origin %q, expected %q", lines[0], origin)
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || lines[1] != strconv.FormatInt(n, 10) {
		return tlog.Tree{}, fmt.Errorf("checkpoint size %q", lines[1])
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return tlog.Tree{}, fmt.Errorf("checkpoint root %q", lines[2])
	}
	var h tlog.Hash
	copy(h[:], root)
	return tlog.Tree{N: n, Hash: h}, nil
}

// entry returns entry i of a bundle: big-endian uint16 lengths, each followed by its bytes.
func entry(bundle []byte, i int) ([]byte, int, error) {
	var found []byte
	count := 0
	for rest := bundle; len(rest) > 0; count++ {
		if len(rest) < 2 {
			return nil, 0, fmt.Errorf("bundle ends inside a length")
		}
		n := int(binary.BigEndian.Uint16(rest))
		if len(rest) < 2+n {
			return nil, 0, fmt.Errorf("bundle ends inside entry %d", count)
		}
		if count == i {
			found = rest[2 : 2+n]
		}
		rest = rest[2+n:]
	}
	if found == nil {
		return nil, count, fmt.Errorf("bundle has %d entries, no entry %d", count, i)
	}
	return found, count, nil
}

type summary struct {
	Origin        string `json:"origin"`
	Size          int64  `json:"size"`
	Root          string `json:"root"`
	RootVerified  bool   `json:"root_verified"`
	EntriesProved int    `json:"entries_proved"`
	Fetched       int    `json:"fetched"`
	Bytes         int    `json:"bytes"`
	Error         string `json:"error,omitempty"`
}

func run(c *client, origin, vkey string, k int, s *summary) error {
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("verifier key: %v", err)
	}
	raw, err := c.get("checkpoint")
	if err != nil {
		return err
	}
	n, err := note.Open(raw, note.VerifierList(verifier))
	if err != nil {
		return fmt.Errorf("checkpoint signature: %v", err)
	}
	tree, err := checkpoint(n.Text, origin)
	if err != nil {
		return err
	}
	s.Size, s.Root = tree.N, base64.StdEncoding.EncodeToString(tree.Hash[:])
	if tree.N == 0 {
		return fmt.Errorf("empty tree")
	}
	hashes := tlog.TileHashReader(tree, tileReader{c})
	root, err := tlog.TreeHash(tree.N, hashes)
	if err != nil {
		return fmt.Errorf("tree hash from tiles: %v", err)
	}
	if root != tree.Hash {
		return fmt.Errorf("root from tiles %v, checkpoint says %v", root, tree.Hash)
	}
	s.RootVerified = true
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for i := 0; i < k; i++ {
		// The first and last entries, then random ones.
		idx := rng.Int63n(tree.N)
		if i == 0 {
			idx = 0
		} else if i == 1 {
			idx = tree.N - 1
		}
		if err := proveEntry(c, tree, hashes, idx); err != nil {
			return err
		}
		s.EntriesProved++
	}
	return nil
}

func proveEntry(c *client, tree tlog.Tree, hashes tlog.HashReader, idx int64) error {
	bundle := tlog.Tile{H: 8, L: -1, N: idx / 256, W: 256}
	if (idx/256+1)*256 > tree.N {
		bundle.W = int(tree.N % 256)
	}
	data, err := c.get(c2spPath(bundle))
	if err != nil {
		return err
	}
	e, count, err := entry(data, int(idx%256))
	if err != nil {
		return fmt.Errorf("%s: %v", c2spPath(bundle), err)
	}
	if count != bundle.W {
		return fmt.Errorf("%s: %d entries, expected %d", c2spPath(bundle), count, bundle.W)
	}
	leaf, err := hashes.ReadHashes([]int64{tlog.StoredHashIndex(0, idx)})
	if err != nil {
		return fmt.Errorf("leaf %d: %v", idx, err)
	}
	rh := tlog.RecordHash(e)
	if rh != leaf[0] {
		return fmt.Errorf("entry %d hashes to %v, the tile holds %v", idx, rh, leaf[0])
	}
	proof, err := tlog.ProveRecord(tree.N, idx, hashes)
	if err != nil {
		return fmt.Errorf("inclusion proof of %d: %v", idx, err)
	}
	if err := tlog.CheckRecord(proof, tree.N, tree.Hash, idx, rh); err != nil {
		return fmt.Errorf("inclusion of %d: %v", idx, err)
	}
	return nil
}

func main() {
	base := flag.String("url", "", "the log's base URL")
	origin := flag.String("origin", "", "the checkpoint origin")
	vkey := flag.String("vkey", "", "the verifier key (signed-note form)")
	k := flag.Int("k", 20, "entries to prove")
	token := flag.String("token", "", "bearer token, if the API asks for one")
	flag.Parse()
	c := &client{base: strings.TrimSuffix(*base, "/"), token: *token, http: &http.Client{Timeout: 60 * time.Second}}
	s := summary{Origin: *origin}
	err := run(c, *origin, *vkey, *k, &s)
	s.Fetched, s.Bytes = c.fetched, c.bytes
	if err != nil {
		s.Error = err.Error()
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.Encode(s)
	os.Stdout.Write(out.Bytes())
	if err != nil {
		os.Exit(1)
	}
}
