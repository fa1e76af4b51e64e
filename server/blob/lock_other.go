//go:build !unix

package blob

import "os"

// lockFile is a no-op where flock(2) is not available.
func lockFile(f *os.File) error { return nil }

// removeIfUnlocked removes the file name. Without flock(2) there is no way
// to tell whether a running Put still uses it: directories must then not be
// shared between processes while one of them opens the store.
func removeIfUnlocked(name string) error { return os.Remove(name) }
