package core

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
)

// TestLazyModulesSameResults relocates every test object against Debian
// 6.12 loaded eagerly (LoadKernel) and lazily (LoadKernelLazy): reports,
// minimized BTF and relocated objects are identical, and the lazy kernel
// reads its modules only for an object naming a type vmlinux lacks (at most
// once, shared by copies).
func TestLazyModulesSameResults(t *testing.T) {
	f := setup(t)
	if testing.Short() {
		t.Skip("Debian kernels are not imported with -short")
	}
	tk := debianKernel(t, "6.12")
	for _, name := range slices.Sorted(maps.Keys(f.objs)) {
		t.Run(name, func(t *testing.T) {
			o := f.object(t, name)
			var loads atomic.Int32
			lazy, err := LoadKernelLazy(tk.k.ID, tk.vmlinux, func() (map[string][]byte, error) {
				loads.Add(1)
				return tk.modules, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			st, err := tk.k.kstate()
			if err != nil {
				t.Fatal(err)
			}
			var need bool
			st.mu.RLock()
			need, err = tk.k.needsModules(st, o.lookupNames)
			st.mu.RUnlock()
			if err != nil {
				t.Fatal(err)
			}

			want := relocate(t, o, tk.k)
			for range 2 {
				got := relocate(t, o, lazy.WithID(tk.k.ID))
				gj, _ := json.Marshal(got.Report)
				wj, _ := json.Marshal(want.Report)
				if !bytes.Equal(gj, wj) {
					t.Errorf("report differs:\n lazy  %s\n eager %s", gj, wj)
				}
				if !bytes.Equal(got.MinBTF, want.MinBTF) || !bytes.Equal(got.Relocated, want.Relocated) {
					t.Errorf("minimized BTF or relocated object differs")
				}
			}
			wantLoads := int32(0)
			if need {
				wantLoads = 1
			}
			if n := loads.Load(); n != wantLoads {
				t.Errorf("modules loaded %d times, want %d (vmlinux lacks a name: %v)", n, wantLoads, need)
			}
			t.Logf("%s: modules needed %v, loaded %d times", name, need, loads.Load())
		})
	}
}
