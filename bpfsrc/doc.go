// Package bpfsrc holds BPF C source bundles: the files a user pushes, their
// validation, their canonical digest (the revision id) and the diagnostics a
// compile of them produces.
//
// Sub-packages compile a bundle with clang in a sandbox (compile) and inspect
// the resulting object (inspect).
package bpfsrc
