// Package manifest defines bpfarm's artifact manifest: what was built, for
// which kernel, the digest and size of every file, and the CO-RE relocation
// report, signed with the server's ed25519 key over the manifest's canonical
// bytes. It is shared by the server (which signs) and the agent (which
// verifies against a pinned key), and needs no cgo.
//
// Canonical bytes: the manifest as JSON with the "signature" member removed,
// object keys sorted by their UTF-8 bytes at every level, no insignificant
// white space, and no HTML escaping (RFC 8785-style for the values a
// manifest holds: strings, integers, booleans, arrays and objects).
package manifest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Version is the manifest format version.
const Version = 1

// Manifest describes one artifact: a build relocated for one kernel.
type Manifest struct {
	Version  int    `json:"version"`
	Program  string `json:"program"`
	Revision string `json:"revision"` // sha256 of the source bundle's canonical form
	BuildID  int64  `json:"build_id"`
	Arch     string `json:"arch"`
	Kernel   string `json:"kernel"` // DISTRO/VERSION/ARCH/RELEASE
	// KernelBTF is the sha256 of the kernel's vmlinux BTF the artifact was
	// relocated against: a host whose own BTF hashes the same can load the
	// pre-relocated object without parsing its BTF.
	KernelBTF string    `json:"kernel_btf,omitempty"`
	Compiler  string    `json:"compiler"`
	Flags     []string  `json:"flags"`
	PerKernel bool      `json:"per_kernel,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Files maps a role (see the File* constants) to the file.
	Files map[string]File `json:"files"`
	// Status summarises Report: failed if any program failed, else
	// unsupported if any is unsupported, else poisoned if any is poisoned,
	// else ok.
	Status string `json:"status"`
	Report Report `json:"report"`
	// Verified holds per-program verifier results on the real kernel, when
	// the kernel was booted (absent otherwise).
	Verified  map[string]Verification `json:"verified,omitempty"`
	Signature *Signature              `json:"signature,omitempty"`
}

// File roles in Manifest.Files.
const (
	FileObject    = "object"    // the CO-RE object, as compiled
	FileMinBTF    = "min_btf"   // the kernel's BTF, minimized to what the object needs
	FileRelocated = "relocated" // the object with this kernel's CO-RE fixups applied
)

// File is one file of an artifact.
type File struct {
	Name   string `json:"name"`   // file name used by `bpfarm artifact get`
	SHA256 string `json:"sha256"` // lower-case hex
	Size   int64  `json:"size"`
}

// Report is a build's CO-RE relocation report for one kernel.
type Report struct {
	Kernel   string          `json:"kernel"`
	Programs []ProgramReport `json:"programs"`
}

// ProgramReport is one program's relocation outcome.
type ProgramReport struct {
	Name    string `json:"name"`
	Section string `json:"section"`
	Status  string `json:"status"` // ok, poisoned, unsupported, failed (see Program statuses)
	Error   string `json:"error,omitempty"`
	// Reason names, on one line, every kernel feature the program needs
	// that the kernel lacks (set when Status is unsupported, and when a
	// failed program also lacks features).
	Reason      string   `json:"reason,omitempty"`
	Relocations int      `json:"relocations"`
	Poisoned    []Poison `json:"poisoned,omitempty"`
	Targets     []Target `json:"targets,omitempty"`
	Needs       []Need   `json:"needs,omitempty"`
}

// Program statuses in a report.
const (
	StatusOK       = "ok"
	StatusPoisoned = "poisoned"
	// StatusUnsupported: the kernel lacks a map type, program type,
	// attach type, helper, kfunc or attach target the program needs, or
	// the instruction set of its instructions.
	StatusUnsupported = "unsupported"
	StatusFailed      = "failed"
)

// Need is a BPF feature of the kernel the program needs: a map type
// (BPF_MAP_TYPE_RINGBUF, for map Map), its program type
// (BPF_PROG_TYPE_SCHED_CLS), attach type (BPF_TCX_INGRESS), a helper
// (BPF_FUNC_ringbuf_output) or the instruction set of its instructions
// ("BPF ISA v4"; the reason names the instructions).
type Need struct {
	Kind   string `json:"kind"` // map_type, program_type, attach_type, helper, instruction_set
	Name   string `json:"name"`
	Map    string `json:"map,omitempty"`
	Status string `json:"status"` // present, missing, unknown
}

// Unsupported returns the first program among names (every program when
// names is empty) whose status is unsupported, or nil.
func (r *Report) Unsupported(names ...string) *ProgramReport {
	for i, p := range r.Programs {
		if p.Status != StatusUnsupported {
			continue
		}
		if len(names) == 0 {
			return &r.Programs[i]
		}
		for _, n := range names {
			if n == p.Name {
				return &r.Programs[i]
			}
		}
	}
	return nil
}

// Poison is a relocation with no match in the kernel: the instruction was
// poisoned, and the program fails to load if it is reached.
type Poison struct {
	Kind        string `json:"kind"`
	Path        string `json:"path"` // e.g. task_struct.real_parent
	Instruction int    `json:"instruction"`
	Guarded     bool   `json:"guarded"`
}

// Target is a kernel hook or function the program needs.
type Target struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Status string `json:"status"` // present, missing, unknown
}

// Verification is a program's verifier verdict on the real kernel.
type Verification struct {
	Accepted     bool   `json:"accepted"`
	Instructions int    `json:"instructions,omitempty"`
	Error        string `json:"error,omitempty"`
}

// Signature is a detached ed25519 signature over the canonical bytes.
type Signature struct {
	Algorithm string `json:"algorithm"` // "ed25519"
	KeyID     string `json:"key_id"`
	Value     string `json:"value"` // base64 (standard)
}

// KeyID is a short, stable name for a public key: the first 16 hex digits
// of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:8])
}

// Canonical returns m's canonical bytes (see the package documentation).
func (m *Manifest) Canonical() ([]byte, error) {
	c := *m
	c.Signature = nil
	raw, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return Canonicalize(raw)
}

// Canonicalize rewrites any JSON document into canonical form.
func Canonicalize(doc []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("canonical JSON: %w", err)
	}
	var buf bytes.Buffer
	if err := writeCanonical(&buf, v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeCanonical(buf *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		buf.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeString(buf, k)
			buf.WriteByte(':')
			if err := writeCanonical(buf, x[k]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	case []any:
		buf.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := writeCanonical(buf, e); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case string:
		writeString(buf, x)
	case json.Number:
		if strings.ContainsAny(x.String(), ".eE") {
			return fmt.Errorf("canonical JSON: non-integer number %s", x)
		}
		buf.WriteString(x.String())
	case bool:
		if x {
			buf.WriteString("true")
		} else {
			buf.WriteString("false")
		}
	case nil:
		buf.WriteString("null")
	default:
		return fmt.Errorf("canonical JSON: unexpected %T", v)
	}
	return nil
}

func writeString(buf *bytes.Buffer, s string) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	buf.Write(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}

// Sign signs m in place with priv.
func (m *Manifest) Sign(priv ed25519.PrivateKey) error {
	msg, err := m.Canonical()
	if err != nil {
		return err
	}
	pub := priv.Public().(ed25519.PublicKey)
	m.Signature = &Signature{Algorithm: "ed25519", KeyID: KeyID(pub),
		Value: base64.StdEncoding.EncodeToString(ed25519.Sign(priv, msg))}
	return nil
}

// Errors of Verify and VerifyFile. ErrUnsigned also matches
// ErrBadSignature (errors.Is): an unsigned manifest does not verify.
var (
	ErrBadSignature         = errors.New("manifest signature does not verify")
	ErrUnsigned       error = unsignedError{}
	ErrDigestMismatch       = errors.New("digest mismatch")
)

type unsignedError struct{}

func (unsignedError) Error() string        { return "manifest is not signed" }
func (unsignedError) Is(target error) bool { return target == ErrBadSignature }

// FileError is a file whose size or sha256 is not the one the manifest
// records. It matches ErrDigestMismatch.
type FileError struct {
	Name        string // the file's name in the manifest
	What        string // "size" or "sha256"
	Got, Wanted string
}

func (e *FileError) Error() string {
	if e.What == "size" {
		return fmt.Sprintf("%s: %s bytes, manifest says %s", e.Name, e.Got, e.Wanted)
	}
	return fmt.Sprintf("%s: %s %s, manifest says %s", e.Name, e.What, e.Got, e.Wanted)
}

// Is makes errors.Is(err, ErrDigestMismatch) hold.
func (e *FileError) Is(target error) bool { return target == ErrDigestMismatch }

// Verify checks m's signature against the pinned public key pub.
func (m *Manifest) Verify(pub ed25519.PublicKey) error {
	if m.Signature == nil || m.Signature.Value == "" {
		return ErrUnsigned
	}
	if m.Signature.Algorithm != "ed25519" {
		return fmt.Errorf("%w: algorithm %q", ErrBadSignature, m.Signature.Algorithm)
	}
	if m.Signature.KeyID != KeyID(pub) {
		return fmt.Errorf("%w: signed by key %s, pinned key is %s", ErrBadSignature, m.Signature.KeyID, KeyID(pub))
	}
	sig, err := base64.StdEncoding.DecodeString(m.Signature.Value)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	msg, err := m.Canonical()
	if err != nil {
		return err
	}
	if !ed25519.Verify(pub, msg, sig) {
		return ErrBadSignature
	}
	return nil
}

// Parse decodes a manifest, refusing unknown fields and other versions.
func Parse(b []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	if m.Version != Version {
		return nil, fmt.Errorf("parse manifest: version %d, this client understands %d", m.Version, Version)
	}
	return &m, nil
}

// VerifyFile checks that content has the digest and size the manifest
// gives for role.
func (m *Manifest) VerifyFile(role string, content []byte) error {
	f, ok := m.Files[role]
	if !ok {
		return fmt.Errorf("manifest has no %s file", role)
	}
	if int64(len(content)) != f.Size {
		return &FileError{Name: f.Name, What: "size", Got: strconv.Itoa(len(content)), Wanted: strconv.FormatInt(f.Size, 10)}
	}
	h := sha256.Sum256(content)
	if got := hex.EncodeToString(h[:]); got != f.SHA256 {
		return &FileError{Name: f.Name, What: "sha256", Got: got, Wanted: f.SHA256}
	}
	return nil
}

// ParsePublicKeyPEM parses a PKIX "PUBLIC KEY" PEM block holding an ed25519
// key, as GET /api/v1/signing-key gives it.
func ParsePublicKeyPEM(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%T is not an ed25519 key", k)
	}
	return pub, nil
}

// ReadPublicKeyFile reads a PEM file holding an ed25519 public key.
func ReadPublicKeyFile(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pub, err := ParsePublicKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}
