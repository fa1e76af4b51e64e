//go:build unix

package blob

import (
	"errors"
	"os"
	"syscall"
)

// lockFile takes an exclusive flock(2) on f, held until f is closed. It
// marks a temporary file as in use by a running Put.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// removeIfUnlocked removes the file name unless another open file holds a
// lock on it (a running Put, maybe in another process).
func removeIfUnlocked(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil // in use
		}
		return err
	}
	return os.Remove(name)
}
