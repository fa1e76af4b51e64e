// Package verify checks bpfarm artifacts against the real kernels they were
// relocated for: it boots each kernel of the archive that has an image in a
// throw-away qemu VM whose /init is bpfarm-verifier, which loads every
// program of the artifact, load-only, with the agent's own loader
// (client/loader), and reports the verifier's verdict over the serial
// console.
//
// # The initramfs
//
// BuildInitramfs writes an uncompressed cpio "newc" archive holding
//
//	/init                      the static bpfarm-verifier binary
//	/dev/console               character device 5:1
//	/bpfarm/job.json           the Job
//	/bpfarm/object.bpf.o       the CO-RE object, as compiled
//	/bpfarm/relocated.bpf.o    the object pre-relocated for the kernel
//	/bpfarm/min.btf            the minimized BTF (when the artifact has one)
//
// and the empty directories /proc, /sys, /tmp and /run.
//
// # The runner
//
// bpfarm-verifier runs as PID 1. Its first stage mounts proc, sysfs and
// devtmpfs and re-executes itself: cilium/ebpf reads /proc at package
// initialisation, before main could mount it. The second stage mounts bpffs
// and tracefs, reads the job, and for each mode of the job (the
// pre-relocated object, and the CO-RE object relocated against the kernel's
// own /sys/kernel/btf/vmlinux) loads each program on its own with
// loader.Load(NoAttach), recording whether the kernel accepted it, the
// number of instructions the verifier processed (the program's
// verified_insns, or "processed N insns" from the log of a rejection), the
// load time and the tail of the verifier log. A tcx program is also
// attached to lo and detached: a kernel without tcx (before 6.6) loads it
// and refuses only the link. It then writes its records to the serial
// console and powers the VM off.
//
// # The serial protocol
//
// Kernel messages share the console with the results, and may be printed
// in the middle of a line, so records are framed and checksummed:
//
//	BPFARM-BEGIN 1 NONCE
//	BPFARM-RESULT NONCE SEQ BASE64 CRC
//	...
//	BPFARM-END NONCE COUNT SHA256 CRC
//
// NONCE is the job's random nonce, SEQ counts records from 0, BASE64 is a
// record (JSON, see Record) in standard base64, CRC is the IEEE CRC-32, in 8
// hex digits, of everything on the line before it, and SHA256 is the hex
// SHA-256 of the concatenated records, in order. A line is accepted only if
// its CRC matches; the set only if every record from 0 to COUNT-1 arrived
// and their SHA-256 matches. The runner writes the whole set twice, so that
// a line garbled by a kernel message is found in the other copy, and lowers
// the console log level while it writes. Anything else on the console
// (kernel messages, garbage) is kept as the console tail.
//
// # The VM
//
// RunVM starts qemu-system-x86_64 (qemu-system-aarch64 for arm64 kernels)
// with -kernel, -initrd and -append "console=ttyS0 panic=-1 quiet",
// -nographic -no-reboot, 512 MiB and one CPU, with KVM when /dev/kvm works
// (probed once by booting a kernel under it) and TCG otherwise, in its own
// process group under a hard wall-clock timeout and an address-space limit.
// A VM that panics, hangs, or prints no valid result set is an outcome
// (kernel-error, timeout), with the console tail, never a stuck worker.
package verify
