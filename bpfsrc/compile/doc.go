// Package compile compiles BPF C source bundles with clang in a sandbox.
//
// A Compiler runs clang inside bubblewrap, which shows it nothing of the host
// but clang's own installation, the job's sources (read-only, at /src), a
// writable /out for the object and the farm's headers (read-only, under
// /farm): libbpf's headers, the kernel UAPI headers of the target
// architecture and the vmlinux.h a VmlinuxProvider supplies. prlimit bounds
// its address space, CPU time, output size and open files, and a wall-clock
// timeout kills it.
//
// Users may only pass the flags ValidateFlags allows. Compile errors and hit
// limits are reported as an *Error whose diagnostics and log name the user's
// own files (relative to the bundle root) and "<farm>/..." headers, never a
// path of the sandbox or the host.
//
// With Config.UsePCH a precompiled vmlinux.h, built once, makes the compile
// of a typical CO-RE program about twice as fast.
package compile
