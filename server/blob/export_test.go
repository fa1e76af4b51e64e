package blob

import "sync"

// tempNames records the names of all temporary S3 objects, so tests can
// check that none is left behind, nor any incomplete upload to one.
var tempNames struct {
	sync.Mutex
	names []string
}

func init() {
	newTempName = func() string {
		n := randomName()
		tempNames.Lock()
		tempNames.names = append(tempNames.names, n)
		tempNames.Unlock()
		return n
	}
}

// TempNames returns the names of the temporary S3 objects created so far.
func TempNames() []string {
	tempNames.Lock()
	defer tempNames.Unlock()
	return append([]string(nil), tempNames.names...)
}
