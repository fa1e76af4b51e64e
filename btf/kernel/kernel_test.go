package kernel

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseID(t *testing.T) {
	good := []struct {
		in   string
		want ID
	}{
		{"debian/12/x86_64/6.1.0-50-cloud-amd64", ID{"debian", "12", "x86_64", "6.1.0-50-cloud-amd64"}},
		{"ubuntu/22.04/arm64/5.15.0-1034-azure", ID{"ubuntu", "22.04", "arm64", "5.15.0-1034-azure"}},
		{"centos/8/x86_64/4.18.0-305.el8.x86_64", ID{"centos", "8", "x86_64", "4.18.0-305.el8.x86_64"}},
		{"debian/12/x86_64/6.12.117+deb12-cloud-amd64", ID{"debian", "12", "x86_64", "6.12.117+deb12-cloud-amd64"}},
		{"fedora/38/x86_64/6.2.9-300.fc38.x86_64", ID{"fedora", "38", "x86_64", "6.2.9-300.fc38.x86_64"}},
		{"ubuntu/20.04/x86_64/5.4.0-1019-aws", ID{"ubuntu", "20.04", "x86_64", "5.4.0-1019-aws"}},
		{"debian/sid/x86_64/6.8.0~rc1_x", ID{"debian", "sid", "x86_64", "6.8.0~rc1_x"}},
	}
	for _, tt := range good {
		id, err := ParseID(tt.in)
		if err != nil {
			t.Errorf("ParseID(%q): %v", tt.in, err)
			continue
		}
		if id != tt.want {
			t.Errorf("ParseID(%q) = %#v, want %#v", tt.in, id, tt.want)
		}
		if id.String() != tt.in {
			t.Errorf("ParseID(%q).String() = %q", tt.in, id.String())
		}
		if err := id.Validate(); err != nil {
			t.Errorf("%q.Validate(): %v", tt.in, err)
		}
	}

	bad := []struct {
		in, errPart string
	}{
		{"", "got 1 part"},
		{"debian/12/x86_64", "got 3 part"},
		{"debian/12/x86_64/6.1.0/extra", "got 5 part"},
		{"/12/x86_64/6.1.0", "distro is empty"},
		{"debian//x86_64/6.1.0", "version is empty"},
		{"debian/12//6.1.0", "arch is empty"},
		{"debian/12/x86_64/", "release is empty"},
		{"debian/12/riscv64/6.1.0", `arch "riscv64" is not x86_64 or arm64`},
		{"debian/12/armhf/6.1.0", `arch "armhf" is not x86_64 or arm64`},
		{"debian/12/x86_64/..", `contains ".."`},
		{"../12/x86_64/6.1.0", `contains ".."`},
		{"debian/./x86_64/6.1.0", `version is "."`},
		{"debian/12/x86_64/6.1..0", `contains ".."`},
		{"debian/12/x86_64/6.1.0 x", `character ' '`},
		{"debian/12/x86_64/6.1.0\nx", `character '\n'`},
		{"debian/12/x86_64/6.1.0\x00", `character '\x00'`},
		{`debian\12/12/x86_64/6.1.0`, `character '\\'`},
		{"debian/12/x86_64/6.1.0:1", `character ':'`},
		{"debian/1é/x86_64/6.1.0", `character`},
		{"debian/12/x86_64/" + strings.Repeat("1", 256), "longer than 255"},
		{"debian//x86_64//", "got 5 part"},
	}
	for _, tt := range bad {
		_, err := ParseID(tt.in)
		if err == nil {
			t.Errorf("ParseID(%q) succeeded", tt.in)
			continue
		}
		if !strings.Contains(err.Error(), tt.errPart) {
			t.Errorf("ParseID(%q): error %q does not contain %q", tt.in, err, tt.errPart)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseID(%q): error has more than one line: %q", tt.in, err)
		}
	}

	if err := (ID{"debian", "12", "amd64", "6.1.0"}).Validate(); err == nil || !strings.Contains(err.Error(), "did you mean x86_64") {
		t.Errorf("Validate of arch amd64: %v, want a refusal naming x86_64", err)
	}
}

// Architecture aliases are read wherever an ID is parsed, and the ID comes
// back in its canonical form.
func TestParseIDArchAliases(t *testing.T) {
	for in, want := range map[string]ID{
		"debian/12/aarch64/6.1.0-27-cloud-arm64": {"debian", "12", "arm64", "6.1.0-27-cloud-arm64"},
		"debian/12/AArch64/6.1.0":                {"debian", "12", "arm64", "6.1.0"},
		"debian/12/amd64/6.1.0-50-cloud-amd64":   {"debian", "12", "x86_64", "6.1.0-50-cloud-amd64"},
		"ubuntu/22.04/X86_64/5.15.0-91-generic":  {"ubuntu", "22.04", "x86_64", "5.15.0-91-generic"},
		"debian/12/arm64/6.1.0":                  {"debian", "12", "arm64", "6.1.0"},
	} {
		got, err := ParseID(in)
		if err != nil || got != want {
			t.Errorf("ParseID(%q) = %#v, %v; want %#v", in, got, err, want)
			continue
		}
		if got.String() != want.String() || got.Validate() != nil {
			t.Errorf("ParseID(%q): %s does not validate", in, got)
		}
	}
	if got := (ID{"centos", "8", "aarch64", "4.18.0-305.el8.aarch64"}).Canonical(); got.Arch != ArchARM64 || got.Release != "4.18.0-305.el8.aarch64" {
		t.Errorf("Canonical changed more than the arch: %#v", got)
	}
	if got := (ID{"x", "1", "riscv64", "6.1"}).Canonical(); got.Arch != "riscv64" {
		t.Errorf("Canonical of an unknown arch: %q", got.Arch)
	}
}

func TestNormalizeArch(t *testing.T) {
	for in, want := range map[string]string{
		"amd64": "x86_64", "x86_64": "x86_64", "x86-64": "x86_64", "AMD64": "x86_64",
		"arm64": "arm64", "aarch64": "arm64",
	} {
		got, err := NormalizeArch(in)
		if err != nil || got != want {
			t.Errorf("NormalizeArch(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "i386", "armhf", "riscv64", "s390x", "ppc64le"} {
		if got, err := NormalizeArch(in); err == nil {
			t.Errorf("NormalizeArch(%q) = %q, want an error", in, got)
		}
	}
}

func TestParseRelease(t *testing.T) {
	good := []struct {
		in   string
		want Release
	}{
		{"6.1.0-50-cloud-amd64", Release{6, 1, 0, "-50-cloud-amd64"}},
		{"5.4.0-1019-aws", Release{5, 4, 0, "-1019-aws"}},
		{"4.18.0-305.el8.x86_64", Release{4, 18, 0, "-305.el8.x86_64"}},
		{"6.12.117+deb12-cloud-amd64", Release{6, 12, 117, "+deb12-cloud-amd64"}},
		{"5.15.0-1034-azure", Release{5, 15, 0, "-1034-azure"}},
		{"3.10.0-1160.el7.x86_64", Release{3, 10, 0, "-1160.el7.x86_64"}},
		{"2.6.32-754.el6.x86_64", Release{2, 6, 32, "-754.el6.x86_64"}},
		{"6.18.44-fc-v595", Release{6, 18, 44, "-fc-v595"}},
		{"6.1.176", Release{6, 1, 176, ""}},
		{"6.8-rc1", Release{6, 8, 0, "-rc1"}},
		{"6.8", Release{6, 8, 0, ""}},
		{"4.9.337", Release{4, 9, 337, ""}},
	}
	for _, tt := range good {
		got, err := ParseRelease(tt.in)
		if err != nil {
			t.Errorf("ParseRelease(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseRelease(%q) = %#v, want %#v", tt.in, got, tt.want)
		}
	}
	for _, in := range []string{"", "6", "6.", "6.x", "v6.1.0", "linux-6.1", "6.1.0 -50", "-6.1.0", "1234567890.1.0", ".1.0"} {
		if got, err := ParseRelease(in); err == nil {
			t.Errorf("ParseRelease(%q) = %#v, want an error", in, got)
		}
	}
}

func TestCompareRelease(t *testing.T) {
	want := []string{
		"2.6.32-754.el6.x86_64",
		"3.10.0-1160.el7.x86_64",
		"4.9.0-9-amd64",
		"4.18.0-240.el8.x86_64",
		"4.18.0-240.1.1.el8_3.x86_64",
		"4.18.0-240.10.1.el8_3.x86_64",
		"4.18.0-305.el8.x86_64",
		"4.18.0-305.3.1.el8_4.x86_64",
		"4.18.0-305.12.1.el8_4.x86_64",
		"4.19.0-9-cloud-amd64",
		"4.19.0-26-cloud-amd64",
		"5.4.0-9-aws",
		"5.4.0-1019-aws",
		"5.4.0-1020-aws",
		"5.10.0-9-cloud-amd64",
		"5.10.0-30-cloud-amd64",
		"5.15.0-91-generic",
		"5.15.0-1034-azure",
		"6.1.0-9-cloud-amd64",
		"6.1.0-10-cloud-amd64",
		"6.1.0-50-cloud-amd64",
		"6.12.9+deb12-cloud-amd64",
		"6.12.38+deb12-cloud-amd64",
		"6.12.117+deb12-cloud-amd64",
		"linux-custom",
		"vmlinux",
	}
	got := slices.Clone(want)
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		r.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
		slices.SortFunc(got, CompareRelease)
		if !slices.Equal(got, want) {
			t.Fatalf("sorted:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	// A total order: antisymmetric, 0 only for equal strings.
	for _, a := range want {
		for _, b := range want {
			ab, ba := CompareRelease(a, b), CompareRelease(b, a)
			if ab != -ba || (ab == 0) != (a == b) {
				t.Errorf("CompareRelease(%q, %q) = %d, reverse %d", a, b, ab, ba)
			}
		}
	}
	if c := CompareRelease("5.4", "5.4.0"); c == 0 {
		t.Error(`CompareRelease("5.4", "5.4.0") = 0 for different strings`)
	}
	if c := CompareRelease("6.1.0-050-x", "6.1.0-50-x"); c == 0 {
		t.Error("CompareRelease: leading zeros made different releases equal")
	}
}

func TestVersionCode(t *testing.T) {
	for _, tt := range []struct {
		a, b, c int
		want    uint32
	}{
		{6, 1, 176, 0x0601b0},
		{6, 12, 117, 0x060c75},
		{4, 9, 337, 0x0409ff}, // clamped, like the kernel
		{5, 4, 0, 0x050400},
		{4, 14, 255, 0x040eff},
		{-1, 2, 3, 0x000203},
	} {
		if got := VersionCode(tt.a, tt.b, tt.c); got != tt.want {
			t.Errorf("VersionCode(%d, %d, %d) = %#x, want %#x", tt.a, tt.b, tt.c, got, tt.want)
		}
	}
}

func TestParseBanner(t *testing.T) {
	for _, tt := range []struct {
		name, in       string
		release, build string
		version        Release
		code           uint32
	}{
		{
			name:    "debian 6.1",
			in:      "Linux version 6.1.0-50-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)\n",
			release: "6.1.0-50-cloud-amd64",
			build:   "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)",
			version: Release{6, 1, 176, "-1"},
			code:    VersionCode(6, 1, 176),
		},
		{
			name:    "debian 6.12 backport",
			in:      "Linux version 6.12.117+deb12-cloud-amd64 (debian-kernel@lists.debian.org) (x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1 (2026-11-14)",
			release: "6.12.117+deb12-cloud-amd64",
			build:   "#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1 (2026-11-14)",
			version: Release{6, 12, 117, "-1~deb12u1"},
			code:    VersionCode(6, 12, 117),
		},
		{
			name:    "debian 10",
			in:      "Linux version 4.19.0-26-cloud-amd64 (debian-kernel@lists.debian.org) (gcc version 8.3.0 (Debian 8.3.0-6)) #1 SMP Debian 4.19.304-1 (2024-01-09)",
			release: "4.19.0-26-cloud-amd64",
			build:   "#1 SMP Debian 4.19.304-1 (2024-01-09)",
			version: Release{4, 19, 304, "-1"},
			code:    VersionCode(4, 19, 255),
		},
		{
			name:    "ubuntu 22.04",
			in:      "Linux version 5.15.0-91-generic (buildd@lcy02-amd64-045) (gcc (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0, GNU ld (GNU Binutils for Ubuntu) 2.38) #101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023",
			release: "5.15.0-91-generic",
			build:   "#101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023",
			version: Release{5, 15, 0, "-91-generic"},
			code:    VersionCode(5, 15, 0),
		},
		{
			name:    "rhel 8",
			in:      "Linux version 4.18.0-305.el8.x86_64 (mockbuild@x86-vm-07.build.eng.bos.redhat.com) (gcc version 8.4.1 20200928 (Red Hat 8.4.1-1) (GCC)) #1 SMP Thu Apr 29 08:54:30 EDT 2021",
			release: "4.18.0-305.el8.x86_64",
			build:   "#1 SMP Thu Apr 29 08:54:30 EDT 2021",
			version: Release{4, 18, 0, "-305.el8.x86_64"},
			code:    VersionCode(4, 18, 0),
		},
		{
			name:    "centos 7, space before the closing parenthesis",
			in:      "Linux version 3.10.0-1160.el7.x86_64 (mockbuild@kbuilder.bsys.centos.org) (gcc version 4.8.5 20150623 (Red Hat 4.8.5-44) (GCC) ) #1 SMP Wed Nov 18 13:34:26 UTC 2020",
			release: "3.10.0-1160.el7.x86_64",
			build:   "#1 SMP Wed Nov 18 13:34:26 UTC 2020",
			version: Release{3, 10, 0, "-1160.el7.x86_64"},
			code:    VersionCode(3, 10, 0),
		},
		{
			name:    "this workplace's kernel",
			in:      "Linux version 6.18.44-fc-v595 (builder@sandboxing) (gcc (GCC) 15.3.0, GNU ld (GNU Binutils) 2.46) #1 SMP PREEMPT_DYNAMIC @0\n\x00",
			release: "6.18.44-fc-v595",
			build:   "#1 SMP PREEMPT_DYNAMIC @0",
			version: Release{6, 18, 44, "-fc-v595"},
			code:    VersionCode(6, 18, 44),
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ParseBanner(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if b.Release != tt.release || b.Build != tt.build || b.Version != tt.version {
				t.Errorf("got %#v", b)
			}
			if got := b.VersionCode(); got != tt.code {
				t.Errorf("VersionCode() = %#x, want %#x", got, tt.code)
			}
		})
	}
	for _, in := range []string{
		"",
		"Linux version",
		"Linux version  (x) #1",
		"linux version 6.1.0 #1",
		"Linux version 6.1.0 (unbalanced #1",
		"Linux version 6.1.0 (a) #1\nLinux version 6.1.0 (a) #1",
		"%s version %s (%s@%s) (%s) %s\n",
	} {
		if b, err := ParseBanner(in); err == nil {
			t.Errorf("ParseBanner(%q) = %#v, want an error", in, b)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseBanner(%q): error has more than one line: %q", in, err)
		}
	}
}

func TestHostFrom(t *testing.T) {
	for _, tt := range []struct {
		file string
		uts  Utsname
		want string
	}{
		{"debian-12", Utsname{"6.1.0-50-cloud-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)", "x86_64"}, "debian/12/x86_64/6.1.0-50-cloud-amd64"},
		{"ubuntu-22.04", Utsname{"5.15.0-1034-azure", "#41-Ubuntu SMP Fri Feb 10 19:59:45 UTC 2023", "x86_64"}, "ubuntu/22.04/x86_64/5.15.0-1034-azure"},
		{"centos-8", Utsname{"4.18.0-348.7.1.el8_5.x86_64", "#1 SMP Wed Dec 22 13:25:12 UTC 2021", "x86_64"}, "centos/8/x86_64/4.18.0-348.7.1.el8_5.x86_64"},
		{"amzn-2", Utsname{"5.10.215-203.850.amzn2.x86_64", "#1 SMP Tue Apr 23 20:32:19 UTC 2024", "x86_64"}, "amzn/2/x86_64/5.10.215-203.850.amzn2.x86_64"},
		{"rocky-9.3", Utsname{"5.14.0-362.8.1.el9_3.aarch64", "#1 SMP PREEMPT_DYNAMIC Wed Nov 8 17:36:32 UTC 2023", "aarch64"}, "rocky/9/arm64/5.14.0-362.8.1.el9_3.aarch64"},
	} {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "os-release", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			h, err := HostFrom(data, tt.uts)
			if err != nil {
				t.Fatal(err)
			}
			if h.ID.String() != tt.want {
				t.Errorf("ID = %s, want %s", h.ID, tt.want)
			}
			if h.Build != tt.uts.Version {
				t.Errorf("Build = %q, want %q", h.Build, tt.uts.Version)
			}
		})
	}

	debian, err := os.ReadFile(filepath.Join("testdata", "os-release", "debian-12"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name      string
		osRelease string
		uts       Utsname
		errPart   string
	}{
		{"unsupported machine", string(debian), Utsname{"6.1.0", "#1", "riscv64"}, `unsupported architecture "riscv64"`},
		{"bad release", string(debian), Utsname{"6.1.0/../x", "#1", "x86_64"}, "release"},
		{"no ID", "VERSION_ID=12\n", Utsname{"6.1.0", "#1", "x86_64"}, "no ID"},
		{"no version", "ID=arch\n", Utsname{"6.1.0", "#1", "x86_64"}, "neither VERSION_ID nor VERSION_CODENAME"},
		{"not os-release", "garbage\n", Utsname{"6.1.0", "#1", "x86_64"}, "want KEY=VALUE"},
		{"bad quote", "ID=\"debian\nVERSION_ID=12\n", Utsname{"6.1.0", "#1", "x86_64"}, "unterminated quote"},
	} {
		if _, err := HostFrom([]byte(tt.osRelease), tt.uts); err == nil || !strings.Contains(err.Error(), tt.errPart) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.errPart)
		}
	}

	// Debian sid has no VERSION_ID.
	sid := "PRETTY_NAME=\"Debian GNU/Linux trixie/sid\"\nNAME=\"Debian GNU/Linux\"\nVERSION_CODENAME=trixie\nID=debian\n"
	h, err := HostFrom([]byte(sid), Utsname{"6.5.0-5-amd64", "#1", "x86_64"})
	if err != nil || h.ID.String() != "debian/trixie/x86_64/6.5.0-5-amd64" {
		t.Errorf("sid: %v, %v", h.ID, err)
	}
}

func TestParseOSRelease(t *testing.T) {
	vars, err := ParseOSRelease([]byte("# comment\n\nA=plain\nB=\"dq \\\"x\\\" \\$y\"\nC='sq \\n'\nD=\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "plain", "B": `dq "x" $y`, "C": `sq \n`, "D": ""}
	for k, v := range want {
		if vars[k] != v {
			t.Errorf("%s = %q, want %q", k, vars[k], v)
		}
	}
}

func TestHost(t *testing.T) {
	h, err := Host()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.ID.Validate(); err != nil {
		t.Fatal(err)
	}
	version, err := os.ReadFile("/proc/version")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseBanner(string(version))
	if err != nil {
		t.Fatal(err)
	}
	if b.Release != h.ID.Release || b.Build != h.Build {
		t.Errorf("Host() = %+v, /proc/version says release %q build %q", h, b.Release, b.Build)
	}
	_, statErr := os.Stat(VmlinuxBTF)
	if h.HasBTF != (statErr == nil) {
		t.Errorf("HasBTF = %v, but stat %s: %v", h.HasBTF, VmlinuxBTF, statErr)
	}
	t.Logf("host: %s (%s), BTF %v", h.ID, h.Build, h.HasBTF)
}
