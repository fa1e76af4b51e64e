package bpfsrc

import "fmt"

// Severity of a compiler diagnostic.
const (
	SeverityError   = "error"
	SeverityWarning = "warning"
	SeverityNote    = "note"
	SeverityFatal   = "fatal error"
)

// Diagnostic is one compiler message, located in the user's own files.
//
// File is always a path relative to the bundle root (or "<farm>/..." for a
// header the farm provides); it never names a sandbox or host path.
type Diagnostic struct {
	File     string `json:"file"`
	Line     int    `json:"line"`
	Column   int    `json:"column"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
}

// String formats d the way clang does: file:line:col: severity: message.
func (d Diagnostic) String() string {
	switch {
	case d.File == "":
		return fmt.Sprintf("%s: %s", d.Severity, d.Message)
	case d.Line == 0:
		return fmt.Sprintf("%s: %s: %s", d.File, d.Severity, d.Message)
	case d.Column == 0:
		return fmt.Sprintf("%s:%d: %s: %s", d.File, d.Line, d.Severity, d.Message)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", d.File, d.Line, d.Column, d.Severity, d.Message)
}
