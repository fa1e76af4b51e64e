package client

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/bpfarm/bpfarm/internal/fsutil"
	"github.com/bpfarm/bpfarm/manifest"
)

// PinnedKeyFile is the name of the pinned signing key in a cache directory.
const PinnedKeyFile = "signing-key.pem"

// PinnedKey returns the server's signing key to verify artifacts with: the
// key in keyFile when given; else the one pinned in cacheDir; else, on
// first use, the server's, which it pins there (trust on first use, like
// ssh: a server whose key changes afterwards is refused). pinned reports
// whether this call pinned a new key.
func (c *Client) PinnedKey(ctx context.Context, keyFile, cacheDir string) (pub ed25519.PublicKey, pinned bool, err error) {
	if keyFile != "" {
		pub, err = manifest.ReadPublicKeyFile(keyFile)
		return pub, false, err
	}
	path := filepath.Join(cacheDir, PinnedKeyFile)
	pub, err = manifest.ReadPublicKeyFile(path)
	if err == nil {
		return pub, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("pinned signing key: %w", err)
	}
	k, err := c.SigningKey(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("no pinned signing key and the server's could not be fetched: %w", err)
	}
	raw, err := base64.StdEncoding.DecodeString(k.PublicKey)
	if k.Algorithm != "ed25519" || err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, false, errors.New("server signing key: not an ed25519 public key")
	}
	if fromPEM, err := manifest.ParsePublicKeyPEM([]byte(k.PEM)); err != nil || !fromPEM.Equal(ed25519.PublicKey(raw)) {
		return nil, false, errors.New("server signing key: its PEM and raw forms disagree")
	}
	if err := fsutil.WriteFileAtomic(path, []byte(k.PEM), 0o600); err != nil {
		return nil, false, fmt.Errorf("pin signing key: %w", err)
	}
	return raw, true, nil
}
