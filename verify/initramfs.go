package verify

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// Initramfs is what goes into a verifier VM's initramfs.
type Initramfs struct {
	// Init is the path of the static bpfarm-verifier binary, installed as
	// /init.
	Init string
	Job  *Job
	// The artifact's files; Object or Relocated must be set.
	Object    []byte
	Relocated []byte
	MinBTF    []byte
}

// NewNonce returns a random job nonce.
func NewNonce() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Write writes the initramfs as an uncompressed newc cpio archive.
func (in *Initramfs) Write(w io.Writer) error {
	if in.Job == nil {
		return errors.New("initramfs: no job")
	}
	if len(in.Object) == 0 && len(in.Relocated) == 0 {
		return errors.New("initramfs: the artifact has no object")
	}
	f, err := os.Open(in.Init)
	if err != nil {
		return fmt.Errorf("initramfs: runner: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("initramfs: runner: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("initramfs: runner %s is not a regular file", in.Init)
	}
	job, err := json.Marshal(in.Job)
	if err != nil {
		return err
	}
	c := NewCPIOWriter(w)
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "bpfarm"} {
		if err := c.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := c.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := c.FileFrom("init", 0o755, st.Size(), f); err != nil {
		return err
	}
	files := []struct {
		path string
		data []byte
	}{
		{JobPath, job}, {ObjectPath, in.Object}, {RelocatedPath, in.Relocated}, {MinBTFPath, in.MinBTF},
	}
	for _, file := range files {
		if len(file.data) == 0 {
			continue
		}
		if err := c.File(strings.TrimPrefix(path.Clean(file.path), "/"), 0o644, file.data); err != nil {
			return err
		}
	}
	return c.Close()
}

// WriteFile writes the initramfs to the file at p.
func (in *Initramfs) WriteFile(p string) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if err := in.Write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
