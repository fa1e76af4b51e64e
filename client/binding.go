package client

import "fmt"

// WrongArtifactError is a validly signed artifact that is not the one
// asked for: another program, revision, kernel or arch than the request
// and the server's resolve answer name, or (Older) a revision older than
// the newest this host has loaded of the program. It matches
// ErrWrongArtifact.
type WrongArtifactError struct {
	// Program is the program asked for.
	Program string
	// What differs: "program", "revision", "kernel" or "arch".
	What string
	// Asked is what was asked for (or resolved), Got what the signed
	// manifest names.
	Asked, Got string
	// Older: Got is a revision older than Asked, the newest loaded here.
	Older bool
}

func (e *WrongArtifactError) Error() string {
	if e.Older {
		return fmt.Sprintf("artifact of %s refused: revision %s is older than revision %s, the newest loaded on this host "+
			"(ask for it by revision to go back)", e.Program, short(e.Got), short(e.Asked))
	}
	return fmt.Sprintf("artifact of %s refused: asked for %s %s, the signed manifest is for %s %s", e.Program, e.What,
		e.Asked, e.What, e.Got)
}

// Is makes errors.Is(err, ErrWrongArtifact) hold.
func (e *WrongArtifactError) Is(target error) bool { return target == ErrWrongArtifact }

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
