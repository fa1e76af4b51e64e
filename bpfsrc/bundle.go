package bpfsrc

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits bound what a bundle may hold.
//
// A zero or negative field takes its value from DefaultLimits, so the zero
// Limits is the same as DefaultLimits and no field can be made unlimited.
type Limits struct {
	// MaxTotalSize bounds the sum of the sizes of all files, in bytes.
	MaxTotalSize int64
	// MaxFiles bounds the number of files (directories are not counted).
	MaxFiles int
	// MaxFileSize bounds the size of a single file, in bytes.
	MaxFileSize int64
	// MaxPathLen bounds the length of a file name, in bytes, after cleaning.
	MaxPathLen int
	// MaxDepth bounds the number of directories above a file: "x.c" has
	// depth 0 and "a/b/x.h" has depth 2.
	MaxDepth int
}

// DefaultLimits are the limits the farm applies unless configured otherwise.
var DefaultLimits = Limits{MaxTotalSize: 8 << 20, MaxFiles: 256, MaxFileSize: 8 << 20, MaxPathLen: 256, MaxDepth: 16}

// withDefaults fills the zero or negative fields of l from DefaultLimits.
func (l Limits) withDefaults() Limits {
	if l.MaxTotalSize <= 0 {
		l.MaxTotalSize = DefaultLimits.MaxTotalSize
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultLimits.MaxFiles
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = DefaultLimits.MaxFileSize
	}
	if l.MaxPathLen <= 0 {
		l.MaxPathLen = DefaultLimits.MaxPathLen
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultLimits.MaxDepth
	}
	return l
}

// Archive overhead allowed on top of the file contents when reading a tar
// stream: every entry may take a header, a PAX extended header and padding,
// and the archive may end with a long run of zero blocks.
const (
	entryOverhead = 4 << 10
	trailerSlack  = 1 << 20
)

// maxEntries is the number of tar entries of any kind (files and directories)
// an archive may hold: enough for every file to come with one entry per
// directory above it.
func (l Limits) maxEntries() int64 {
	return satMul(int64(l.MaxFiles), int64(l.MaxDepth)+1)
}

// streamLimit is the number of uncompressed tar bytes ReadTar and ReadTarGz
// read at most.
func (l Limits) streamLimit() int64 {
	return satAdd(satAdd(l.MaxTotalSize, satMul(l.maxEntries(), entryOverhead)), trailerSlack)
}

// compressedLimit is the number of compressed bytes ReadTarGz reads at most.
// Compression can make data slightly larger, and a gzip stream can hold empty
// blocks or members that decompress to nothing; this bounds both.
func (l Limits) compressedLimit() int64 {
	s := l.streamLimit()
	return satAdd(satAdd(s, s/8), 64<<10)
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func satMul(a, b int64) int64 {
	if a != 0 && b > math.MaxInt64/a {
		return math.MaxInt64
	}
	return a * b
}

// File is one source file of a bundle; Name is a clean, slash-separated
// relative path.
type File struct {
	Name string
	Data []byte
}

// Bundle is a validated set of source files plus the entry file to compile.
//
// A Bundle returned by this package satisfies every rule of New; its fields
// must not be modified afterwards.
type Bundle struct {
	// Entry is the name of the file to compile, one of Files.
	Entry string
	// Files are the files of the bundle, sorted by Name (byte-wise).
	Files []File
}

// InvalidError is returned for any rule violation. Its message is one line
// naming the file and the rule, for example:
//
//	bundle: "../x.h": path escapes the bundle root
type InvalidError struct {
	// Path is the offending name as the input spelled it, or "" when the
	// rule concerns the bundle as a whole.
	Path string
	// Reason is the rule that was broken, in a few words.
	Reason string
	// Err is the underlying error, if any (for example a gzip or tar
	// decoding error).
	Err error
}

// Error formats e as `bundle: "path": reason`, quoting the path Go-style so
// that control characters cannot break the line, and shortening a path
// longer than a few hundred bytes.
func (e *InvalidError) Error() string {
	if e.Path == "" {
		return "bundle: " + e.Reason
	}
	p := e.Path
	if len(p) > maxShownPath {
		p = p[:maxShownPath] + "..."
	}
	return fmt.Sprintf("bundle: %q: %s", p, e.Reason)
}

// maxShownPath bounds the part of a path an error message shows.
const maxShownPath = 300

// Unwrap returns the underlying error, if any.
func (e *InvalidError) Unwrap() error { return e.Err }

func invalid(name, format string, args ...any) *InvalidError {
	return &InvalidError{Path: name, Reason: fmt.Sprintf(format, args...)}
}

// New validates files and entry and returns them as a bundle.
//
// Every name must be a relative, slash-separated path: no leading "/", no
// drive letter, no backslash, no ".." or "." component, no empty component,
// no NUL or other control character, valid UTF-8, not starting with "-"; a
// leading "./" is stripped. Names must be unique, no file may sit where
// another needs a directory ("a" and "a/b.h"), and names, file counts and
// sizes must respect lim.
//
// entry names the file to compile; it must be one of files and end in ".c"
// (normally ".bpf.c"). If entry is "", the bundle must hold exactly one
// "*.bpf.c" file, which becomes the entry.
//
// New copies the slice of files but not their contents, which the caller
// must not modify afterwards. Any rule violation is reported as an
// *InvalidError.
func New(entry string, files []File, lim Limits) (*Bundle, error) {
	lim = lim.withDefaults()
	out, err := Validate(files, lim)
	if err != nil {
		return nil, err
	}
	e, err := resolveEntry(entry, out, lim)
	if err != nil {
		return nil, err
	}
	return &Bundle{Entry: e, Files: out}, nil
}

// Validate checks files by the rules of New, without an entry file, and
// returns them with clean names, sorted by Name. Packages that take other
// sets of files from publishers (header sets) use it.
func Validate(files []File, lim Limits) ([]File, error) {
	lim = lim.withDefaults()
	if len(files) > lim.MaxFiles {
		return nil, invalid("", "bundle holds %d files; the limit is %d", len(files), lim.MaxFiles)
	}
	out := make([]File, 0, len(files))
	raw := make(map[string]string, len(files)) // clean name -> name as given
	var total int64
	for _, f := range files {
		name, err := cleanName(f.Name, false, lim)
		if err != nil {
			return nil, err
		}
		if prev, dup := raw[name]; dup {
			return nil, duplicate(f.Name, prev)
		}
		raw[name] = f.Name
		size := int64(len(f.Data))
		if size > lim.MaxFileSize {
			return nil, invalid(f.Name, "file is %d bytes; the limit is %d", size, lim.MaxFileSize)
		}
		total += size
		if total > lim.MaxTotalSize {
			return nil, invalid(f.Name, "bundle exceeds %d bytes in total", lim.MaxTotalSize)
		}
		out = append(out, File{Name: name, Data: f.Data})
	}
	slices.SortFunc(out, func(a, b File) int { return strings.Compare(a.Name, b.Name) })

	// A file cannot also be a directory of another file.
	for _, f := range out {
		for i := strings.IndexByte(f.Name, '/'); i >= 0; i = nextSlash(f.Name, i) {
			if prev, ok := raw[f.Name[:i]]; ok {
				return nil, invalid(raw[f.Name], "needs %q to be a directory, but the bundle has a file of that name", prev)
			}
		}
	}

	return out, nil
}

func nextSlash(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

func duplicate(name, prev string) *InvalidError {
	if name == prev {
		return invalid(name, "duplicate file")
	}
	return invalid(name, "duplicate file (same as %q)", prev)
}

// resolveEntry checks entry against the sorted files, or picks the only
// *.bpf.c file if entry is "".
func resolveEntry(entry string, files []File, lim Limits) (string, error) {
	if entry == "" {
		var cands []string
		for _, f := range files {
			if strings.HasSuffix(f.Name, ".bpf.c") {
				cands = append(cands, f.Name)
			}
		}
		switch len(cands) {
		case 1:
			return cands[0], nil
		case 0:
			return "", invalid("", "no *.bpf.c file in the bundle; name the entry file")
		}
		const show = 5
		list := make([]string, 0, show)
		for _, c := range cands[:min(len(cands), show)] {
			list = append(list, strconv.Quote(c))
		}
		more := ""
		if len(cands) > show {
			more = fmt.Sprintf(" and %d more", len(cands)-show)
		}
		return "", invalid("", "%d *.bpf.c files (%s%s); name the entry file", len(cands), strings.Join(list, ", "), more)
	}

	name, err := cleanName(entry, false, lim)
	if err != nil {
		err.Reason = "entry: " + err.Reason
		return "", err
	}
	if !strings.HasSuffix(name, ".c") {
		return "", invalid(entry, "entry must be a .bpf.c or .c file")
	}
	if _, ok := slices.BinarySearchFunc(files, name, func(f File, n string) int { return strings.Compare(f.Name, n) }); !ok {
		return "", invalid(entry, "entry file is not in the bundle")
	}
	return name, nil
}

// cleanName checks a name as found in an archive or given to New and returns
// its canonical form: leading "./" are stripped, and for a directory a
// trailing "/" too (the root directory yields "").
func cleanName(raw string, dir bool, lim Limits) (string, *InvalidError) {
	if raw == "" {
		return "", invalid(raw, "empty path")
	}
	if !utf8.ValidString(raw) {
		return "", invalid(raw, "path is not valid UTF-8")
	}
	for _, r := range raw {
		if unicode.IsControl(r) {
			return "", invalid(raw, "path contains a NUL or control character")
		}
	}
	if strings.IndexByte(raw, '\\') >= 0 {
		return "", invalid(raw, "path contains a backslash")
	}
	if len(raw) >= 2 && raw[1] == ':' && ('a' <= raw[0]|0x20 && raw[0]|0x20 <= 'z') {
		return "", invalid(raw, "path starts with a drive letter")
	}
	name := raw
	for strings.HasPrefix(name, "./") {
		name = name[2:]
	}
	if strings.HasPrefix(name, "/") {
		return "", invalid(raw, "path is absolute")
	}
	if dir {
		name = strings.TrimSuffix(name, "/")
		if name == "" || name == "." {
			return "", nil
		}
	} else if strings.HasSuffix(name, "/") {
		return "", invalid(raw, "file name ends in a slash")
	}
	for elem := range strings.SplitSeq(name, "/") {
		switch elem {
		case "..":
			if c := path.Clean(name); c == ".." || strings.HasPrefix(c, "../") {
				return "", invalid(raw, "path escapes the bundle root")
			}
			return "", invalid(raw, `path has a ".." component`)
		case ".":
			return "", invalid(raw, `path has a "." component`)
		case "":
			return "", invalid(raw, "path has an empty component")
		}
	}
	if strings.HasPrefix(name, "-") {
		return "", invalid(raw, `path starts with "-"`)
	}
	if len(name) > lim.MaxPathLen {
		return "", invalid(raw, "path is %d bytes long; the limit is %d", len(name), lim.MaxPathLen)
	}
	if d := strings.Count(name, "/"); d > lim.MaxDepth {
		return "", invalid(raw, "path is %d directories deep; the limit is %d", d, lim.MaxDepth)
	}
	return name, nil
}

// ReadTarGz reads a bundle from a gzip-compressed tar archive.
//
// See ReadTar for the rules. Beyond them, the compressed and the
// uncompressed streams are both read only up to a bound derived from lim, so
// a gzip bomb is refused after a few tens of megabytes of work with the
// default limits. The gzip stream is read to its end so that its checksum is
// verified.
func ReadTarGz(r io.Reader, entry string, lim Limits) (*Bundle, error) {
	files, err := ReadTarGzFiles(r, lim)
	if err != nil {
		return nil, err
	}
	return New(entry, files, lim)
}

// ReadTarGzFiles reads the files of a gzip-compressed tar archive by the
// rules and bounds of ReadTarGz, without checking them as a whole: pass them
// to New or Validate.
func ReadTarGzFiles(r io.Reader, lim Limits) ([]File, error) {
	lim = lim.withDefaults()
	src := newBoundedReader(r, lim.compressedLimit())
	g := &streamGuard{src: src, gz: true}
	zr, err := gzip.NewReader(src)
	if err != nil {
		if err == io.EOF {
			return nil, &InvalidError{Reason: "not a gzip stream: empty input", Err: err}
		}
		return nil, g.classify(err)
	}
	defer zr.Close()
	g.inner = newBoundedReader(zr, lim.streamLimit())

	files, err := readTar(g.inner, lim)
	if err != nil {
		return nil, g.classify(err)
	}
	// Read what follows the end of the archive (normally zero padding) so
	// that gzip verifies its checksum and a truncated stream is noticed.
	if _, err := io.Copy(io.Discard, g.inner); err != nil {
		return nil, g.classify(err)
	}
	return files, nil
}

// ReadTar reads a bundle from an uncompressed tar archive.
//
// Only regular files (tar type '0' or '\x00') and directories are allowed;
// directory entries are checked like file names and otherwise ignored. Any
// other entry type (symbolic or hard link, device, fifo, GNU sparse or other
// GNU extension, PAX global header) is refused, naming the type. Names are
// checked as New describes, and limits are enforced while streaming: a file
// that is too large, or one file too many, is refused from its header,
// before its contents are read. The archive may hold at most
// MaxFiles×(MaxDepth+1) entries of any kind, and is read only up to a bound
// derived from lim (MaxTotalSize plus 4 KiB per entry plus 1 MiB); what
// follows the end-of-archive marker is not read.
//
// entry is as for New. Rule violations and malformed archives are reported
// as an *InvalidError; an error reading r is returned wrapped.
func ReadTar(r io.Reader, entry string, lim Limits) (*Bundle, error) {
	lim = lim.withDefaults()
	src := newBoundedReader(r, lim.streamLimit())
	g := &streamGuard{src: src, inner: src}
	files, err := readTar(src, lim)
	if err != nil {
		return nil, g.classify(err)
	}
	return New(entry, files, lim)
}

// readTar reads the files of a tar stream, checking them as it goes. Rule
// violations are returned as *InvalidError, anything else as the raw error
// for the caller to classify. The caller is left to check the files as a
// whole with New.
func readTar(r io.Reader, lim Limits) ([]File, error) {
	tr := tar.NewReader(r)
	var (
		files    []File
		total    int64
		entries  int64
		seen     = make(map[string]string)
		maxEntry = lim.maxEntries()
	)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		// With GODEBUG=tarinsecurepath=0, Next flags names it considers
		// unsafe; they are checked below anyway.
		if err != nil && !(errors.Is(err, tar.ErrInsecurePath) && hdr != nil) {
			return nil, err
		}
		entries++
		if entries > maxEntry {
			return nil, invalid("", "archive holds more than %d entries", maxEntry)
		}
		if reason := checkType(hdr); reason != "" {
			return nil, invalid(hdr.Name, "%s", reason)
		}
		isDir := hdr.Typeflag == tar.TypeDir
		name, ierr := cleanName(hdr.Name, isDir, lim)
		if ierr != nil {
			return nil, ierr
		}
		if isDir {
			continue
		}
		if len(files) >= lim.MaxFiles {
			return nil, invalid(hdr.Name, "bundle holds more than %d files", lim.MaxFiles)
		}
		if prev, dup := seen[name]; dup {
			return nil, duplicate(hdr.Name, prev)
		}
		if hdr.Size > lim.MaxFileSize {
			return nil, invalid(hdr.Name, "file is %d bytes; the limit is %d", hdr.Size, lim.MaxFileSize)
		}
		if total+hdr.Size > lim.MaxTotalSize {
			return nil, invalid(hdr.Name, "bundle exceeds %d bytes in total", lim.MaxTotalSize)
		}
		data := make([]byte, hdr.Size)
		if _, err := io.ReadFull(tr, data); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		total += hdr.Size
		seen[name] = hdr.Name
		files = append(files, File{Name: name, Data: data})
	}
	return files, nil
}

// checkType returns why the entry hdr is refused, or "" if it is a regular
// file or a directory.
func checkType(hdr *tar.Header) string {
	var what string
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, "GNU.sparse.") {
				return "GNU sparse file (PAX) not allowed; only regular files"
			}
		}
		return ""
	case tar.TypeDir:
		return ""
	case tar.TypeLink:
		what = "hard link"
	case tar.TypeSymlink:
		what = "symbolic link"
	case tar.TypeChar:
		what = "character device"
	case tar.TypeBlock:
		what = "block device"
	case tar.TypeFifo:
		what = "fifo"
	case tar.TypeCont:
		what = "contiguous file"
	case tar.TypeXGlobalHeader:
		what = "PAX global header"
	case tar.TypeGNUSparse:
		what = "GNU sparse file"
	case 'D':
		what = "GNU dump directory"
	case 'M':
		what = "GNU multi-volume continuation"
	case 'V':
		what = "GNU volume header"
	default:
		what = "unknown entry type"
	}
	return fmt.Sprintf("%s (tar type %q) not allowed; only regular files", what, hdr.Typeflag)
}

// errLimit is returned by a boundedReader that has reached its bound.
var errLimit = errors.New("stream limit reached")

// boundedReader reads at most max bytes from r and then fails with errLimit
// if r has more. It records the first error r returns, other than io.EOF, so
// that the errors of the underlying reader can be told apart from those of
// the decoders reading from it.
type boundedReader struct {
	r     io.Reader
	max   int64 // the bound
	n     int64 // bytes left
	limit bool  // r had more than max bytes
	err   error // first error from r
}

func newBoundedReader(r io.Reader, max int64) *boundedReader {
	return &boundedReader{r: r, max: max, n: max}
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.limit {
		return 0, errLimit
	}
	if int64(len(p)) > b.n+1 {
		p = p[:b.n+1]
	}
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	if int64(n) <= b.n {
		b.n -= int64(n)
		return n, err
	}
	n = int(b.n)
	b.n = 0
	b.limit = true
	return n, errLimit
}

// streamGuard turns the errors of reading an archive into the errors the
// caller sees.
type streamGuard struct {
	src   *boundedReader // reads the caller's reader
	inner *boundedReader // reads the tar stream: the gzip reader, or src
	gz    bool           // src is gzip-compressed
}

func (g *streamGuard) classify(err error) error {
	if _, ok := errors.AsType[*InvalidError](err); ok {
		return err
	}
	switch {
	case g.gz && g.src.limit:
		return &InvalidError{Reason: fmt.Sprintf("compressed archive is larger than %d bytes", g.src.max), Err: err}
	case g.inner != nil && g.inner.limit:
		what := "archive is larger than %d bytes"
		if g.gz {
			what += " uncompressed"
		}
		return &InvalidError{Reason: fmt.Sprintf(what, g.inner.max), Err: err}
	case g.src.err != nil:
		return fmt.Errorf("read bundle: %w", g.src.err)
	}

	kind, cause := "tar archive", err
	switch {
	case g.gz && g.inner == nil:
		// gzip.NewReader failed on the header.
		if errors.Is(err, gzip.ErrHeader) {
			return &InvalidError{Reason: "not a gzip stream", Err: err}
		}
		kind = "gzip stream"
	case g.gz && g.inner.err != nil:
		// The error came out of the decompressor.
		kind, cause = "gzip stream", g.inner.err
	}
	if errors.Is(cause, io.ErrUnexpectedEOF) {
		return &InvalidError{Reason: "truncated " + kind, Err: cause}
	}
	return &InvalidError{Reason: "malformed " + kind + ": " + oneLine(cause.Error()), Err: cause}
}

// oneLine collapses the white space of s, newlines included.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Digest returns the revision id of b: the lower-case hex SHA-256 of its
// canonical form.
//
// The canonical form is, for each file in byte-wise ascending Name order,
// the Name, a 0x00 byte, the length of Data in bytes as an ASCII decimal
// number without leading zeros, a 0x00 byte and Data; followed by a final
// entry record: the bytes 0x01 "entry" 0x00 and the Entry name. Names never
// hold NUL or control characters, so the encoding is unambiguous.
//
// The digest depends only on names, contents and the entry: not on archive
// order, timestamps, owners, modes or "./" prefixes. It is a stable external
// identifier and must never change.
func (b *Bundle) Digest() string {
	h := sha256.New()
	var num [20]byte
	for _, f := range b.sorted() {
		io.WriteString(h, f.Name)
		h.Write([]byte{0})
		h.Write(strconv.AppendInt(num[:0], int64(len(f.Data)), 10))
		h.Write([]byte{0})
		h.Write(f.Data)
	}
	io.WriteString(h, "\x01entry\x00")
	io.WriteString(h, b.Entry)
	return hex.EncodeToString(h.Sum(nil))
}

// WriteTarGz writes b as a gzip-compressed tar archive that ReadTarGz
// accepts.
//
// The output is deterministic: files in Name order, regular files only (no
// directory entries), mode 0644, owner and group 0 without names, mtime 0,
// and a gzip header without name or time. The same bundle gives the same
// bytes for a given Go toolchain; the archive does not record the entry,
// which must be sent alongside it. Use Digest, not the archive bytes, to
// identify a bundle.
func (b *Bundle) WriteTarGz(w io.Writer) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	tw := tar.NewWriter(zw)
	for _, f := range b.sorted() {
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     f.Name,
			Size:     int64(len(f.Data)),
			Mode:     0o644,
			ModTime:  time.Unix(0, 0),
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write bundle: file %q: %w", f.Name, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return fmt.Errorf("write bundle: file %q: %w", f.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return nil
}

// sorted returns the files of b in Name order.
func (b *Bundle) sorted() []File {
	cmp := func(a, b File) int { return strings.Compare(a.Name, b.Name) }
	if slices.IsSortedFunc(b.Files, cmp) {
		return b.Files
	}
	files := slices.Clone(b.Files)
	slices.SortFunc(files, cmp)
	return files
}

// Extract writes the files of b under dir, which must exist and be empty.
//
// Names are checked again, and every file and directory is created through
// an os.Root for dir, files with O_EXCL, so nothing is written outside dir
// and no symbolic link is followed out of it. Files get mode 0644 and
// directories 0755, less the umask. If Extract fails, dir may hold part of
// the bundle.
func (b *Bundle) Extract(dir string) error {
	noLimit := Limits{MaxTotalSize: math.MaxInt64, MaxFiles: math.MaxInt, MaxFileSize: math.MaxInt64, MaxPathLen: math.MaxInt, MaxDepth: math.MaxInt}
	for _, f := range b.Files {
		name, err := cleanName(f.Name, false, noLimit)
		if err != nil {
			return fmt.Errorf("extract bundle: %w", err)
		}
		if name != f.Name {
			return fmt.Errorf("extract bundle: %w", invalid(f.Name, "name is not clean"))
		}
	}

	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("extract bundle: %w", err)
	}
	defer root.Close()
	if err := checkEmpty(root); err != nil {
		return fmt.Errorf("extract bundle to %s: %w", dir, err)
	}

	made := map[string]bool{".": true}
	for _, f := range b.Files {
		if err := mkdirs(root, path.Dir(f.Name), made); err != nil {
			return fmt.Errorf("extract bundle to %s: %w", dir, err)
		}
		fh, err := root.OpenFile(filepath.FromSlash(f.Name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("extract bundle to %s: %w", dir, err)
		}
		_, err = fh.Write(f.Data)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("extract bundle to %s: %w", dir, err)
		}
	}
	return nil
}

func checkEmpty(root *os.Root) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if len(names) > 0 {
		return errors.New("directory is not empty")
	}
	if err != nil && err != io.EOF {
		return err
	}
	return nil
}

// mkdirs creates dir and its parents inside root, refusing anything on the
// way that is not a directory (a symbolic link in particular).
func mkdirs(root *os.Root, dir string, made map[string]bool) error {
	if made[dir] {
		return nil
	}
	if err := mkdirs(root, path.Dir(dir), made); err != nil {
		return err
	}
	p := filepath.FromSlash(dir)
	if err := root.Mkdir(p, 0o755); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		fi, err := root.Lstat(p)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
	}
	made[dir] = true
	return nil
}

// File returns the contents of the file called name and whether it exists.
func (b *Bundle) File(name string) ([]byte, bool) {
	files := b.sorted()
	i, ok := slices.BinarySearchFunc(files, name, func(f File, n string) int { return strings.Compare(f.Name, n) })
	if !ok {
		return nil, false
	}
	return files[i].Data, true
}

// Size returns the total size of the files of b, in bytes.
func (b *Bundle) Size() int64 {
	var n int64
	for _, f := range b.Files {
		n += int64(len(f.Data))
	}
	return n
}
