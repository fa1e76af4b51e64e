//go:build !unix

package testenv

// lockFile does not lock where flock(2) is missing: concurrent downloads
// may then both happen, but each still lands whole by rename.
func lockFile(path string) (func(), error) {
	return func() {}, nil
}
