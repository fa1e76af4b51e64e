package verify

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// programResults returns the program records of an outcome, by mode and
// program.
func programResults(t testing.TB, out *Outcome) map[string]*ProgramResult {
	t.Helper()
	res := map[string]*ProgramResult{}
	for _, r := range out.Records {
		switch r.Kind {
		case KindProgram:
			res[r.Program.Mode+"/"+r.Program.Program] = r.Program
		case KindError:
			t.Errorf("runner error: %s", r.Error)
		}
	}
	return res
}

func info(out *Outcome) *GuestInfo {
	for _, r := range out.Records {
		if r.Kind == KindInfo {
			return r.Info
		}
	}
	return nil
}

// TestExamplesOnDebianKernels boots the Debian 6.1 and 6.12 kernels and
// verifies every example program, pre-relocated and CO-RE with the
// kernel's own BTF.
func TestExamplesOnDebianKernels(t *testing.T) {
	requireQemu(t)
	ex := examples(t)
	objs := map[string][]byte{}
	for name, src := range ex {
		objs[name] = compile(t, src)
	}
	for _, series := range []string{"6.1", "6.12"} {
		t.Run(series, func(t *testing.T) {
			k := debianKernel(t, series)
			for name, obj := range objs {
				a := relocate(t, name, obj, k)
				out, _ := bootArtifact(t, a, k, 0)
				if out.Status != StatusComplete {
					t.Fatalf("%s on %s: %s: %s\n%s", name, k.Release, out.Status, out.Reason, out.Tail)
				}
				gi := info(out)
				if gi == nil || gi.Release != k.Release || !gi.BTF {
					t.Errorf("%s: guest info %+v, want release %s with BTF", name, gi, k.Release)
				}
				res := programResults(t, out)
				if len(res) == 0 {
					t.Errorf("%s: no program results", name)
				}
				for key, r := range res {
					if !r.Accepted {
						t.Errorf("%s %s on %s: rejected: %s\n%s", name, key, k.Release, r.Error, strings.Join(r.Log, "\n"))
						continue
					}
					if r.Instructions <= 0 {
						t.Errorf("%s %s on %s: no verified instruction count", name, key, k.Release)
					}
					t.Logf("%s %s on %s: accepted, %d insns, load %s", name, key, k.Release, r.Instructions, time.Duration(r.LoadNS))
				}
				t.Logf("%s on %s: boot %s (guest uptime at /init %d ms), VM %s, accel %s, %d garbled lines",
					name, k.Release, out.Boot.Round(time.Millisecond), gi.UptimeMS, out.Duration.Round(time.Millisecond), out.Accel, out.Garbled)
			}
		})
	}
}

// TestVerifierDifference: a program using a cpu v4 instruction (a
// sign-extending move, Linux 6.6) is rejected by the 6.1 verifier and
// accepted by 6.12's, and so is one using open-coded iterators (Linux 6.4),
// while a plain program of the same object is accepted by both.
func TestVerifierDifference(t *testing.T) {
	requireQemu(t)
	obj := compile(t, "testdata/newer.bpf.c")
	got := map[string]map[string]*ProgramResult{}
	for _, series := range []string{"6.1", "6.12"} {
		k := debianKernel(t, series)
		out, _ := bootArtifact(t, relocate(t, "newer", obj, k), k, 0)
		if out.Status != StatusComplete {
			t.Fatalf("%s: %s: %s\n%s", k.Release, out.Status, out.Reason, out.Tail)
		}
		got[series] = programResults(t, out)
		for key, r := range got[series] {
			t.Logf("%s %s: accepted=%v verifier=%v insns=%d error=%q", k.Release, key, r.Accepted, r.Verifier, r.Instructions, r.Error)
		}
	}
	for _, mode := range DefaultModes {
		if r := got["6.1"][mode+"/sext"]; r == nil || r.Accepted || !r.Verifier || !strings.Contains(r.Error, "BPF_MOV uses reserved fields") {
			t.Errorf("6.1 %s/sext: want a verifier rejection \"BPF_MOV uses reserved fields\", got %+v", mode, r)
		}
		if r := got["6.12"][mode+"/sext"]; r == nil || !r.Accepted {
			t.Errorf("6.12 %s/sext: want accepted, got %+v", mode, r)
		}
		// Open-coded iterators: 6.1 lacks the bpf_iter_num kfuncs, which the
		// program declares weak (as libbpf does): the loader poisons the
		// calls and 6.1's verifier refuses them; 6.12 verifies the loop.
		if r := got["6.1"][mode+"/iter"]; r == nil || r.Accepted {
			t.Errorf("6.1 %s/iter: want rejected, got %+v", mode, r)
		}
		if r := got["6.12"][mode+"/iter"]; r == nil || !r.Accepted {
			t.Errorf("6.12 %s/iter: want accepted, got %+v", mode, r)
		}
		for _, series := range []string{"6.1", "6.12"} {
			if r := got[series][mode+"/plain"]; r == nil || !r.Accepted {
				t.Errorf("%s %s/plain: want accepted, got %+v", series, mode, r)
			}
		}
	}
}

// TestKernelPanic: a kernel that panics (init=/nonexistent) is a
// kernel-error with the panic message, well within its timeout.
func TestKernelPanic(t *testing.T) {
	requireQemu(t)
	k := debianKernel(t, "6.1")
	vm := &VM{Kernel: k.Image, Cmdline: "panic=-1 init=/nonexistent", Nonce: NewNonce()}
	out, err := vm.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != StatusKernelError || !strings.Contains(out.Reason, "Kernel panic") {
		t.Fatalf("got %s (%s), want a kernel-error naming the panic\n%s", out.Status, out.Reason, out.Tail)
	}
	t.Logf("%s: %s after %s", out.Status, out.Reason, out.Duration.Round(time.Millisecond))
}

// TestTruncatedInitramfs: an initramfs cut in half does not unpack; the
// kernel finds no /init and panics: a kernel-error.
func TestTruncatedInitramfs(t *testing.T) {
	requireQemu(t)
	k := debianKernel(t, "6.1")
	job := &Job{Version: JobVersion, Nonce: NewNonce(), Program: "x", PowerOff: true}
	obj := compile(t, "testdata/newer.bpf.c")
	p := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := (&Initramfs{Init: runner(t), Job: job, Object: obj, Relocated: obj}).WriteFile(p); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if err := os.Truncate(p, st.Size()/3); err != nil {
		t.Fatal(err)
	}
	out, err := (&VM{Kernel: k.Image, Initrd: p, Nonce: job.Nonce}).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if out.Status == StatusComplete {
		t.Fatalf("a truncated initramfs gave results: %+v", out.Records)
	}
	t.Logf("%s: %s after %s\n%s", out.Status, out.Reason, out.Duration.Round(time.Millisecond), out.Tail)
}

// TestHang: an /init that never answers is a timeout, and the VM is gone
// when Run returns.
func TestHang(t *testing.T) {
	requireQemu(t)
	k := debianKernel(t, "6.1")
	hang := filepath.Join(t.TempDir(), "hang")
	if _, err := buildGo(t, "testdata/hang", hang); err != nil {
		t.Fatal(err)
	}
	job := &Job{Version: JobVersion, Nonce: NewNonce(), Program: "x"}
	p := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := (&Initramfs{Init: hang, Job: job, Object: []byte("x")}).WriteFile(p); err != nil {
		t.Fatal(err)
	}
	out, err := (&VM{Kernel: k.Image, Initrd: p, Nonce: job.Nonce, Timeout: 20 * time.Second}).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != StatusTimeout {
		t.Fatalf("got %s (%s), want timeout\n%s", out.Status, out.Reason, out.Tail)
	}
	if !strings.Contains(string(out.Console), "bpfarm-test-hang: waiting forever") {
		t.Errorf("the hanging init never ran:\n%s", out.Tail)
	}
	t.Logf("%s: %s", out.Status, out.Reason)
}

// TestArgsArm64: arm64 kernels boot on qemu's virt machine, with the max
// CPU under TCG (every arm64 feature a Debian kernel may want) and the
// host's under KVM, and their console is the PL011 (ttyAMA0).
func TestArgsArm64(t *testing.T) {
	a := Arches["arm64"]
	if a.Qemu != "qemu-system-aarch64" || a.Console != "ttyAMA0" || a.GOARCH != "arm64" {
		t.Fatalf("arm64: %+v", a)
	}
	vm := &VM{Arch: "arm64", Kernel: "vmlinuz", Initrd: "initrd"}
	for accel, want := range map[string]string{"tcg": "-M virt -accel tcg,tb-size=256 -cpu max", "kvm": "-M virt -accel kvm -cpu host"} {
		args := strings.Join(vm.args(a, accel, "512M", "console=ttyAMA0 quiet"), " ")
		if !strings.Contains(args, want) || !strings.Contains(args, "-kernel vmlinuz -append console=ttyAMA0 quiet -initrd initrd") {
			t.Errorf("%s: %s, want %q", accel, args, want)
		}
	}
}
