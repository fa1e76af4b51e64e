package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCachedKernel(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{
		"linux-image-6.1.0-9-cloud-amd64-unsigned_6.1.27-1_amd64.deb",
		"linux-image-6.1.0-50-cloud-amd64-unsigned_6.1.176-1_amd64.deb",
		"linux-image-6.1.0-10-cloud-amd64-unsigned_6.1.38-1_amd64.deb",
		"linux-image-6.1.0-60-cloud-arm64-unsigned_6.1.200-1_arm64.deb",
		"linux-image-6.1.0-70-amd64-unsigned_6.1.210-1_amd64.deb",
		"linux-image-6.12.9+deb12-cloud-amd64-unsigned_6.12.9-1~deb12u1_amd64.deb",
		"linux-image-6.12.117+deb12-cloud-amd64-unsigned_6.12.117-1~deb12u1_amd64.deb",
		"linux-image-6.12.38+deb12-cloud-amd64-unsigned_6.12.38-1~deb12u1_amd64.deb",
		"linux-image-6.10.1+deb12-cloud-amd64-unsigned_6.10.1-1_amd64.deb",
		"dl.log",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, ".download-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	for series, want := range map[string]string{
		"6.1":  "linux-image-6.1.0-50-cloud-amd64-unsigned_6.1.176-1_amd64.deb",
		"6.12": "linux-image-6.12.117+deb12-cloud-amd64-unsigned_6.12.117-1~deb12u1_amd64.deb",
		"5.10": "",
	} {
		got, err := cachedKernel(dir, kernelPackage(series, "amd64"), "amd64")
		if err != nil {
			t.Fatal(err)
		}
		if want != "" {
			want = filepath.Join(dir, want)
		}
		if got != want {
			t.Errorf("series %s: got %q, want %q", series, got, want)
		}
	}
	got, err := cachedKernel(dir, kernelPackage("6.1", "arm64"), "arm64")
	if err != nil || filepath.Base(got) != "linux-image-6.1.0-60-cloud-arm64-unsigned_6.1.200-1_arm64.deb" {
		t.Errorf("arm64: got %q, %v", got, err)
	}
}

func TestDebianArch(t *testing.T) {
	for in, want := range map[string]string{"amd64": "amd64", "x86_64": "amd64", "arm64": "arm64", "aarch64": "arm64"} {
		if got, err := DebianArch(in); err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := DebianArch("mips"); err == nil {
		t.Error("mips: no error")
	}
}

func TestDebianImageNames(t *testing.T) {
	for name, want := range map[string][4]string{
		"linux-image-6.1.0-57-amd64-unsigned":             {"6.1.0-57-amd64", "6.1", "", "amd64"},
		"linux-image-6.1.0-57-cloud-arm64-unsigned":       {"6.1.0-57-cloud-arm64", "6.1", "cloud", "arm64"},
		"linux-image-6.12.118+deb12-rt-amd64-unsigned":    {"6.12.118+deb12-rt-amd64", "6.12", "rt", "amd64"},
		"linux-image-6.12.118+deb12-cloud-arm64-unsigned": {"6.12.118+deb12-cloud-arm64", "6.12", "cloud", "arm64"},
	} {
		m := debianImage.FindStringSubmatch(name)
		if m == nil || [4]string(m[1:]) != want {
			t.Errorf("%s: %q, want %q", name, m, want)
		}
	}
	for _, name := range []string{"linux-image-6.1.0-57-amd64", "linux-image-6.1.0-57-amd64-dbg", "linux-image-amd64", "linux-image-6.1.0-57-686-pae-unsigned"} {
		if debianImage.MatchString(name) {
			t.Errorf("%s matched", name)
		}
	}
}
