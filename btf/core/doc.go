// Package core is the heart of the farm: it relocates compiled CO-RE BPF
// objects against the kernels of the BTF archive.
//
// An Object (LoadObject) is parsed once per build and a Kernel (LoadKernel)
// once per kernel; Object.Relocate then computes, for one kernel and in a
// few milliseconds:
//
//   - a Report: per program, whether every CO-RE relocation resolves
//     ("ok"), some match nothing and are poisoned as libbpf does
//     ("poisoned", with each poisoned access path and whether the program
//     guards it), or relocation fails ("failed"); whether the
//     tracepoints, functions and kfuncs the program needs exist; and the
//     BPF features it needs (map types, program type, attach type,
//     helpers), read from the kernel's own BTF enums once per kernel
//     (features.go): a program needing one the kernel lacks is
//     "unsupported", with the reason;
//   - a minimized BTF with only the types and members the relocations
//     touch, like bpftool gen min_core_btf, equivalent to the full BTF for
//     relocating this object;
//   - a pre-relocated object: the ELF with every fixup applied and its CO-RE
//     relocation records removed, which libbpf, bpftool and cilium/ebpf load
//     without any kernel BTF.
//
// Relocation uses cilium/ebpf's CO-RE engine (btf.CORERelocate), so the
// results are the ones a cilium/ebpf loader would compute on the host.
package core
