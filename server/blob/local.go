package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/bpfarm/bpfarm/server/fault"
)

// Local is a Store in a local directory.
//
// Blobs live at DIR/sha256/ab/<64 hex digits>, where ab are the first two hex
// digits of the digest. They are written to a temporary file in DIR/tmp,
// verified, synced to disk and then renamed into place, so a blob's final
// name only ever holds complete, verified content. Blob files are read-only
// (0444), directories 0755.
//
// Several Locals, in one or several processes, may share a directory.
type Local struct {
	dir    string // DIR
	blobs  string // DIR/sha256
	tmpDir string // DIR/tmp
}

var _ Store = (*Local)(nil)

// NewLocal opens the directory store at dir, creating it as needed.
//
// It removes temporary files left behind by interrupted Puts (those no live
// Put holds a lock on).
func NewLocal(dir string) (*Local, error) {
	if dir == "" {
		return nil, errors.New("local blob store: empty directory name")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local blob store: %w", err)
	}
	l := &Local{
		dir:    dir,
		blobs:  filepath.Join(dir, "sha256"),
		tmpDir: filepath.Join(dir, "tmp"),
	}
	for _, d := range []string{l.blobs, l.tmpDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("local blob store: %w", err)
		}
	}
	// Create the 256 shard directories up front, so that Put rarely has to
	// create (and sync) directories.
	created := false
	for i := range 256 {
		shard := filepath.Join(l.blobs, fmt.Sprintf("%02x", i))
		if err := os.Mkdir(shard, 0o755); err == nil {
			created = true
		} else if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("local blob store: %w", err)
		}
	}
	if created {
		if err := syncDir(l.blobs); err != nil {
			return nil, fmt.Errorf("local blob store: %w", err)
		}
	}
	if err := l.removeStaleTemp(); err != nil {
		return nil, fmt.Errorf("local blob store: %w", err)
	}
	return l, nil
}

// Dir returns the store's root directory (absolute).
func (l *Local) Dir() string { return l.dir }

// path returns the file name of blob d.
func (l *Local) path(d Digest) string {
	hex := d.String()
	return filepath.Join(l.blobs, hex[:2], hex)
}

// removeStaleTemp removes the temporary files of Puts that are no longer
// running. A running Put holds an exclusive lock on its temporary file.
func (l *Local) removeStaleTemp() error {
	entries, err := os.ReadDir(l.tmpDir)
	if err != nil {
		return fmt.Errorf("remove stale temporary files: %w", err)
	}
	for _, e := range entries {
		name := filepath.Join(l.tmpDir, e.Name())
		if err := removeIfUnlocked(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale temporary file: %w", err)
		}
	}
	return nil
}

// Put implements Store.
//
// If want is given and already stored, Put returns without reading r.
// When size is -1 the content is not limited in length: callers taking
// content from untrusted sources must limit it themselves.
func (l *Local) Put(ctx context.Context, r io.Reader, size int64, want Digest) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("put blob: %w", err)
	}
	if !want.Zero() {
		info, err := l.Stat(ctx, want)
		if err == nil {
			if size >= 0 && info.Size != size {
				return Info{}, fmt.Errorf("put blob %s: announced %d bytes, stored blob has %d: %w",
					want, size, info.Size, ErrDigestMismatch)
			}
			l.touch(want)
			return info, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return Info{}, fmt.Errorf("put blob: %w", err)
		}
	}

	f, err := os.CreateTemp(l.tmpDir, "put-*")
	if err != nil {
		return Info{}, fmt.Errorf("put blob: %w", err)
	}
	// Until the rename, the temporary file is removed on every error path.
	// The lock tells NewLocal (possibly in another process) that the file
	// is in use: it is held until the file is closed, after the rename.
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			_ = os.Remove(tmp)
		}
		_ = f.Close()
	}()
	if err := lockFile(f); err != nil {
		return Info{}, fmt.Errorf("put blob: lock temporary file: %w", err)
	}

	pr := newPutReader(ctx, r)
	var src io.Reader = pr
	if size >= 0 {
		// Read one byte more than announced to detect longer content
		// without reading an unbounded stream.
		src = io.LimitReader(pr, size+1)
	}
	buf := getCopyBuf()
	_, err = io.CopyBuffer(writerOnly{f}, src, *buf)
	putCopyBuf(buf)
	if err != nil {
		return Info{}, fmt.Errorf("put blob: %w", err)
	}
	info := Info{Digest: pr.sum(), Size: pr.n}
	if err := checkPut(info, size, want); err != nil {
		return Info{}, err
	}

	final := l.path(info.Digest)
	if _, err := os.Lstat(final); err == nil {
		// Already stored (by a concurrent or earlier Put): drop ours.
		return info, nil
	}
	if err := f.Chmod(0o444); err != nil {
		return Info{}, fmt.Errorf("put blob %s: %w", info.Digest, err)
	}
	if err := f.Sync(); err != nil {
		return Info{}, fmt.Errorf("put blob %s: %w", info.Digest, err)
	}
	shard := filepath.Dir(final)
	if err := os.MkdirAll(shard, 0o755); err != nil {
		return Info{}, fmt.Errorf("put blob %s: %w", info.Digest, err)
	}
	// rename(2) is atomic: readers see either no file or the complete one.
	// Concurrent Puts of the same content may both rename; the content is
	// identical, so whichever wins is fine.
	if err := os.Rename(tmp, final); err != nil {
		return Info{}, fmt.Errorf("put blob %s: %w", info.Digest, err)
	}
	done = true
	// Make the new directory entry durable.
	if err := syncDir(shard); err != nil {
		return Info{}, fmt.Errorf("put blob %s: %w", info.Digest, err)
	}
	return info, nil
}

// Get implements Store. The returned reader is an *os.File.
func (l *Local) Get(ctx context.Context, d Digest) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get blob %s: %w", d, err)
	}
	f, err := os.Open(l.path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get blob %s: %w", d, err)
	}
	return f, nil
}

// Stat implements Store.
func (l *Local) Stat(ctx context.Context, d Digest) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("stat blob %s: %w", d, err)
	}
	fi, err := os.Stat(l.path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("stat blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return Info{}, fmt.Errorf("stat blob %s: %w", d, err)
	}
	if !fi.Mode().IsRegular() {
		return Info{}, fmt.Errorf("stat blob %s: %s is not a regular file", d, l.path(d))
	}
	return Info{Digest: d, Size: fi.Size()}, nil
}

// syncDir fsyncs a directory, making changes to its entries durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// writerOnly hides an *os.File's ReadFrom, so that io.CopyBuffer uses the
// given (larger) buffer.
type writerOnly struct{ io.Writer }

// Delete implements Store.
func (l *Local) Delete(ctx context.Context, d Digest) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete blob %s: %w", d, err)
	}
	err := os.Remove(l.path(d))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", d, err)
	}
	return nil
}

// List implements Store.
func (l *Local) List(ctx context.Context, fn func(Entry) error) error {
	for i := range 256 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		shard := filepath.Join(l.blobs, fmt.Sprintf("%02x", i))
		entries, err := os.ReadDir(shard)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return fmt.Errorf("list blobs: %w", err)
		}
		for _, e := range entries {
			d, err := ParseDigest(e.Name())
			if err != nil || !e.Type().IsRegular() {
				continue // not a blob
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted meanwhile
			}
			if err != nil {
				return fmt.Errorf("list blobs: %w", err)
			}
			if err := fn(Entry{Info: Info{Digest: d, Size: fi.Size()}, ModTime: fi.ModTime()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// MinFree is the free space below which Local.Check reports the volume
// full: a Put of a typical blob would fail.
const MinFree = 1 << 20

// Check implements Store: the directory is there and its file system has
// at least MinFree bytes free (else the error wraps fault.ErrNoSpace).
func (l *Local) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("check blob store: %w", err)
	}
	if _, err := os.Stat(l.tmpDir); err != nil {
		return fmt.Errorf("check blob store: %w", err)
	}
	free, err := freeBytes(l.tmpDir)
	if err != nil {
		return fmt.Errorf("check blob store: %w", err)
	}
	if free < MinFree {
		return fault.Wrap(fault.ErrNoSpace, fmt.Errorf("blob store %s: %d bytes free", l.dir, free))
	}
	return nil
}

// touch refreshes a blob's modification time when a Put finds it already
// stored, so that garbage collection's grace period counts from the last
// Put (a row naming it may be about to be written).
func (l *Local) touch(d Digest) {
	t := time.Now()
	_ = os.Chtimes(l.path(d), t, t)
}
