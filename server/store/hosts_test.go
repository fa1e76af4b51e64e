package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/bpfarm/bpfarm/api"
)

func putKernel(t *testing.T, db *DB, kid string) Kernel {
	t.Helper()
	p := strings.Split(kid, "/")
	k, _, _, err := db.PutKernel(context.Background(), Kernel{KID: kid, Distro: p[0], Version: p[1], Arch: p[2], Release: p[3],
		BTFBlob: "btf-" + kid, BTFSize: 1}, false)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// buildAndRelocate runs a succeeded CO-RE build of prog@rev for x86_64
// and relocates it for every x86_64 kernel, finishing each relocation
// with done unless fail names its kernel id.
func buildAndRelocate(t *testing.T, db *DB, prog, rev string, leaveQueued bool) {
	t.Helper()
	ctx := context.Background()
	addRev(t, db, prog, rev)
	if _, _, err := db.EnsureBuild(ctx, BuildInput{Program: prog, Revision: rev, Arch: "x86_64", CacheKey: "k-" + prog + rev}); err != nil {
		t.Fatal(err)
	}
	job, err := db.Claim(ctx, testClaim)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Finish(ctx, job.Lease, Outcome{State: api.StateSucceeded, ObjectBlob: "obj-" + rev, ObjectSize: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.QueueArtifacts(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if leaveQueued {
		return
	}
	for {
		aj, err := db.ClaimArtifact(ctx, testClaim, "")
		if errors.Is(err, ErrNotFound) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := db.FinishArtifact(ctx, aj.Lease, ArtifactOutcome{Status: "ok", ManifestBlob: "m-" + rev}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRegisterHost(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		reg := api.HostRegistration{Name: "web-1", HostID: "m1", Kernel: "debian/12/x86_64/6.1.0-1-amd64",
			Labels: map[string]string{"role": "web"}, HasBTF: true, AgentVersion: "v1"}
		r, err := db.RegisterHost(ctx, reg, "agent")
		if err != nil || !r.Created || !r.Changed || r.Host.Name != "web-1" || r.Host.Labels["role"] != "web" || !r.Host.HasBTF {
			t.Fatalf("first registration: %+v %v", r, err)
		}
		first := r.Host.FirstSeen
		// The same again: idempotent, nothing the desired state depends on changed.
		r, err = db.RegisterHost(ctx, reg, "agent")
		if err != nil || r.Created || r.Changed || r.Host.ID != 1 || !r.Host.FirstSeen.Equal(first) {
			t.Fatalf("second registration: %+v %v", r, err)
		}
		// New labels and another machine under the same name.
		reg.Labels = map[string]string{"role": "db"}
		reg.HostID = "m2"
		r, err = db.RegisterHost(ctx, reg, "agent")
		if err != nil || r.Created || !r.Changed || r.PreviousHostID != "m1" || r.Host.Labels["role"] != "db" {
			t.Fatalf("relabel: %+v %v", r, err)
		}
		report := []api.HostProgram{{Program: "p", Revision: "r1", State: api.HostProgramLoaded}}
		if err := db.ReportHost(ctx, "web-1", report); err != nil {
			t.Fatal(err)
		}
		if err := db.ReportHost(ctx, "nope", report); !errors.Is(err, ErrNotFound) {
			t.Fatalf("report of an unknown host: %v", err)
		}
		h, err := db.Host(ctx, "web-1")
		if err != nil || len(h.Programs) != 1 || h.Programs[0].State != api.HostProgramLoaded || h.ReportedAt == nil {
			t.Fatalf("host: %+v %v", h, err)
		}
		if h.ArchiveKernel != "" {
			t.Fatalf("archive kernel of an unknown kernel: %q", h.ArchiveKernel)
		}
		// Same release under another distro entry: matched like resolve does.
		putKernel(t, db, "ubuntu/22.04/x86_64/6.1.0-1-amd64")
		hs, err := db.Hosts(ctx)
		if err != nil || len(hs) != 1 || hs[0].ArchiveKernel != "ubuntu/22.04/x86_64/6.1.0-1-amd64" {
			t.Fatalf("hosts: %+v %v", hs, err)
		}
		if _, err := db.Host(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown host: %v", err)
		}
	})
}

func TestMatches(t *testing.T) {
	labels := map[string]string{"role": "web", "zone": "a"}
	for _, c := range []struct {
		sel  map[string]string
		want bool
	}{
		{nil, true},
		{map[string]string{}, true},
		{map[string]string{"role": "web"}, true},
		{map[string]string{"role": "web", "zone": "a"}, true},
		{map[string]string{"role": "web", "zone": "b"}, false},
		{map[string]string{"role": "db"}, false},
		{map[string]string{"tier": ""}, false},
	} {
		if got := Matches(c.sel, labels); got != c.want {
			t.Errorf("Matches(%v, %v) = %v, want %v", c.sel, labels, got, c.want)
		}
	}
}

func TestAssignments(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		if _, err := db.AddAssignment(ctx, api.AssignmentRequest{Program: "nope"}, "pub"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("assign an unknown program: %v", err)
		}
		addRev(t, db, "p", "aaaa1111")
		if _, err := db.AddAssignment(ctx, api.AssignmentRequest{Program: "p", Revision: "bbbb"}, "pub"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("assign an unknown revision: %v", err)
		}
		a, err := db.AddAssignment(ctx, api.AssignmentRequest{Program: "p", Revision: "aaaa", Selector: map[string]string{"role": "web"},
			Options: api.LoadOptions{Programs: []string{"x"}, Set: map[string]string{"v": "1"}, Attach: api.AttachOptions{Interface: "lo"}}}, "pub")
		if err != nil || a.Revision != "aaaa1111" || a.Selector["role"] != "web" || a.Options.Attach.Interface != "lo" ||
			a.Options.Set["v"] != "1" || a.CreatedBy != "pub" {
			t.Fatalf("assign: %+v %v", a, err)
		}
		as, err := db.Assignments(ctx, "p")
		if err != nil || len(as) != 1 || as[0].ID != a.ID {
			t.Fatalf("list: %+v %v", as, err)
		}
		if err := db.DeleteAssignment(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		if err := db.DeleteAssignment(ctx, a.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
	})
}

func TestDesiredState(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		const kid = "debian/12/x86_64/6.1.0-1-amd64"
		if _, err := desired(t, db, "web-1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("desired state of an unknown host: %v", err)
		}
		reg := api.HostRegistration{Name: "web-1", Kernel: kid, Labels: map[string]string{"role": "web", "zone": "a"}}
		if _, err := db.RegisterHost(ctx, reg, "agent"); err != nil {
			t.Fatal(err)
		}
		ds, err := desired(t, db, "web-1")
		if err != nil || len(ds.Programs) != 0 || ds.Version == 0 {
			t.Fatalf("nothing assigned: %+v %v", ds, err)
		}
		empty := ds.Version

		// Assigned, but the kernel is not in the archive: pending.
		addRev(t, db, "p", "rev1")
		if _, err := db.AddAssignment(ctx, api.AssignmentRequest{Program: "p", Selector: map[string]string{"role": "web"}}, "pub"); err != nil {
			t.Fatal(err)
		}
		ds, err = desired(t, db, "web-1")
		if err != nil || len(ds.Programs) != 1 || ds.Programs[0].Revision != "" || !strings.Contains(ds.Programs[0].Pending, "not in the archive") {
			t.Fatalf("unknown kernel: %+v %v", ds, err)
		}
		if ds.Version == empty {
			t.Fatal("version did not change with the content")
		}
		// The kernel arrives; r1 never built: still pending, with the reason.
		putKernel(t, db, kid)
		putKernel(t, db, "debian/12/x86_64/6.1.0-2-amd64")
		ds, err = desired(t, db, "web-1")
		if err != nil || ds.Programs[0].Revision != "" || !strings.Contains(ds.Programs[0].Pending, "no artifact") || ds.Programs[0].Kernel != kid {
			t.Fatalf("no artifact: %+v %v", ds, err)
		}
		// r2 built and relocated: desired.
		buildAndRelocate(t, db, "p", "rev2", false)
		ds, err = desired(t, db, "web-1")
		if err != nil || ds.Programs[0].Revision != "rev2" || ds.Programs[0].Pending != "" || ds.Programs[0].ArtifactID == 0 {
			t.Fatalf("r2: %+v %v", ds, err)
		}
		v2 := ds.Version
		// Same content, same version.
		if again, _ := desired(t, db, "web-1"); again.Version != v2 {
			t.Fatalf("version not stable: %d then %d", v2, again.Version)
		}
		// r3 pushed but its relocation is not done: rev2 stays desired.
		buildAndRelocate(t, db, "p", "rev3", true)
		ds, _ = desired(t, db, "web-1")
		if ds.Programs[0].Revision != "rev2" || ds.Version != v2 {
			t.Fatalf("r3 queued: %+v", ds)
		}
		for {
			aj, err := db.ClaimArtifact(ctx, testClaim, "")
			if errors.Is(err, ErrNotFound) {
				break
			}
			if err := db.FinishArtifact(ctx, aj.Lease, ArtifactOutcome{Status: "ok", ManifestBlob: "m"}); err != nil {
				t.Fatal(err)
			}
		}
		ds, _ = desired(t, db, "web-1")
		if ds.Programs[0].Revision != "rev3" || ds.Version == v2 {
			t.Fatalf("r3 done: %+v", ds)
		}
		// A newer assignment of the same program pins r2 and wins.
		pin, err := db.AddAssignment(ctx, api.AssignmentRequest{Program: "p", Revision: "rev2", Selector: map[string]string{"zone": "a"},
			Options: api.LoadOptions{Attach: api.AttachOptions{Interface: "eth0"}}}, "pub")
		if err != nil {
			t.Fatal(err)
		}
		ds, _ = desired(t, db, "web-1")
		if len(ds.Programs) != 1 || ds.Programs[0].Revision != "rev2" || ds.Programs[0].Assignment != pin.ID ||
			ds.Programs[0].Options.Attach.Interface != "eth0" {
			t.Fatalf("pinned: %+v", ds)
		}
		// A pin to a revision with no artifact: pending.
		addRev(t, db, "p", "rev4")
		if err := db.DeleteAssignment(ctx, pin.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := db.AddAssignment(ctx, api.AssignmentRequest{Program: "p", Revision: "rev4"}, "pub"); err != nil {
			t.Fatal(err)
		}
		ds, _ = desired(t, db, "web-1")
		if ds.Programs[0].Revision != "" || !strings.Contains(ds.Programs[0].Pending, "revision rev4") {
			t.Fatalf("pinned without artifact: %+v", ds)
		}
		// Selectors: another program for db hosts only is not desired here;
		// relabelling the host brings it in.
		buildAndRelocate(t, db, "q", "qrev1", false)
		if _, err := db.AddAssignment(ctx, api.AssignmentRequest{Program: "q", Selector: map[string]string{"role": "db"}}, "pub"); err != nil {
			t.Fatal(err)
		}
		ds, _ = desired(t, db, "web-1")
		if len(ds.Programs) != 1 {
			t.Fatalf("q selected for a web host: %+v", ds)
		}
		reg.Labels = map[string]string{"role": "db"}
		if r, err := db.RegisterHost(ctx, reg, "agent"); err != nil || !r.Changed {
			t.Fatalf("relabel: %+v %v", r, err)
		}
		ds, _ = desired(t, db, "web-1")
		if len(ds.Programs) != 2 || ds.Programs[0].Program != "p" || ds.Programs[1].Program != "q" || ds.Programs[1].Revision != "qrev1" {
			t.Fatalf("relabelled: %+v", ds)
		}
	})
}

func TestAssignmentExports(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		const kid = "debian/12/x86_64/6.1.0-1-amd64"
		putKernel(t, db, kid)
		buildAndRelocate(t, db, "p", "rev1", false)
		if _, err := db.RegisterHost(ctx, api.HostRegistration{Name: "web-1", Kernel: kid}, "agent"); err != nil {
			t.Fatal(err)
		}
		plain, err := db.AddAssignment(ctx, api.AssignmentRequest{Program: "p"}, "pub")
		if err != nil || plain.Exports == nil || len(plain.Exports) != 0 {
			t.Fatalf("assignment without exports: %+v %v", plain, err)
		}
		ds, err := db.DesiredState(ctx, "web-1")
		if err != nil || len(ds.Programs) != 1 || ds.Programs[0].Exports != nil {
			t.Fatalf("desired without exports: %+v %v", ds, err)
		}
		before := ds.Version
		want := []api.Export{{Map: "counts"}, {Map: "latency", Kind: api.ExportHistogram}}
		a, err := db.AddAssignment(ctx, api.AssignmentRequest{Program: "p", Exports: want}, "pub")
		if err != nil || !slices.Equal(a.Exports, want) {
			t.Fatalf("assignment with exports: %+v %v", a, err)
		}
		if got, err := db.Assignment(ctx, a.ID); err != nil || !slices.Equal(got.Exports, want) {
			t.Fatalf("stored exports: %+v %v", got, err)
		}
		ds, err = db.DesiredState(ctx, "web-1")
		if err != nil || len(ds.Programs) != 1 || !slices.Equal(ds.Programs[0].Exports, want) {
			t.Fatalf("desired with exports: %+v %v", ds, err)
		}
		if ds.Version == before {
			t.Fatal("adding exports did not change the desired state's version")
		}
		// A host's report keeps each export's status.
		rep := []api.HostProgram{{Program: "p", State: api.HostProgramLoaded, Exports: []api.ExportStatus{
			{Map: "counts", Kind: api.ExportCounter, Metrics: []string{"bpfarm_p_counts_total"}, Labels: []string{"key"}},
			{Map: "latency", Error: "map latency: not in the loaded set"}}}}
		if err := db.ReportHost(ctx, "web-1", rep); err != nil {
			t.Fatal(err)
		}
		h, err := db.Host(ctx, "web-1")
		if err != nil || len(h.Programs) != 1 || len(h.Programs[0].Exports) != 2 ||
			h.Programs[0].Exports[1].Error != rep[0].Exports[1].Error || h.Programs[0].Exports[0].Metrics[0] != "bpfarm_p_counts_total" {
			t.Fatalf("reported exports: %+v %v", h, err)
		}
	})
}

// desired computes a host's desired state with the DB and with a fresh
// DesiredView, and fails the test when the two differ.
func desired(t *testing.T, db *DB, host string) (api.DesiredState, error) {
	t.Helper()
	ctx := context.Background()
	ds, err := db.DesiredState(ctx, host)
	vs, verr := db.DesiredView().DesiredState(ctx, host)
	if (err == nil) != (verr == nil) || (err != nil && errors.Is(err, ErrNotFound) != errors.Is(verr, ErrNotFound)) {
		t.Fatalf("desired state of %s: DB says %v, view says %v", host, err, verr)
	}
	if !reflect.DeepEqual(ds, vs) {
		t.Fatalf("desired state of %s: DB says %+v, view says %+v", host, ds, vs)
	}
	return ds, err
}

// TestDesiredView: a view answers many hosts as the DB does, from one
// snapshot: it does not see changes made after its reads; a new view does.
func TestDesiredView(t *testing.T) {
	each(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		kernels := []string{"debian/12/x86_64/6.1.0-1-amd64", "debian/12/x86_64/6.1.0-2-amd64", "debian/12/x86_64/6.1.0-3-amd64"}
		for _, k := range kernels[:2] {
			putKernel(t, db, k)
		}
		buildAndRelocate(t, db, "p", "rev1", false)
		if _, err := db.AddAssignment(ctx, api.AssignmentRequest{Program: "p", Selector: map[string]string{"role": "web"}}, "pub"); err != nil {
			t.Fatal(err)
		}
		var hosts []string
		for i := range 12 {
			name := fmt.Sprintf("h%02d", i)
			role := []string{"web", "db"}[i%2]
			reg := api.HostRegistration{Name: name, Kernel: kernels[i%3], Labels: map[string]string{"role": role}}
			if _, err := db.RegisterHost(ctx, reg, "agent"); err != nil {
				t.Fatal(err)
			}
			hosts = append(hosts, name)
		}
		view := db.DesiredView()
		before := map[string]api.DesiredState{}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				vs, err := view.DesiredState(ctx, h)
				ds, derr := db.DesiredState(ctx, h)
				mu.Lock()
				defer mu.Unlock()
				if err != nil || derr != nil || !reflect.DeepEqual(vs, ds) {
					t.Errorf("host %s: view %+v (%v), DB %+v (%v)", h, vs, err, ds, derr)
				}
				before[h] = vs
			}()
		}
		wg.Wait()
		if got := before["h00"]; len(got.Programs) != 1 || got.Programs[0].Revision != "rev1" {
			t.Fatalf("web host on an archived kernel: %+v", got)
		}
		if got := before["h01"]; len(got.Programs) != 0 {
			t.Fatalf("db host: %+v", got)
		}
		if got := before["h02"]; len(got.Programs) != 1 || !strings.Contains(got.Programs[0].Pending, "not in the archive") {
			t.Fatalf("web host on an unknown kernel: %+v", got)
		}
		// A change after the view's reads: the view keeps its snapshot,
		// a new view sees it.
		if _, err := db.AddAssignment(ctx, api.AssignmentRequest{Program: "p", Selector: map[string]string{"role": "db"}}, "pub"); err != nil {
			t.Fatal(err)
		}
		if vs, _ := view.DesiredState(ctx, "h01"); !reflect.DeepEqual(vs, before["h01"]) {
			t.Fatalf("the view saw a change after its reads: %+v", vs)
		}
		if vs, _ := desired(t, db, "h01"); len(vs.Programs) != 1 {
			t.Fatalf("a new view missed the new assignment: %+v", vs)
		}
		// A host registered after the view's reads is still answered.
		if _, err := db.RegisterHost(ctx, api.HostRegistration{Name: "late", Kernel: kernels[0], Labels: map[string]string{"role": "web"}}, "agent"); err != nil {
			t.Fatal(err)
		}
		if vs, err := view.DesiredState(ctx, "late"); err != nil || len(vs.Programs) != 1 {
			t.Fatalf("late host: %+v %v", vs, err)
		}
		if _, err := view.DesiredState(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown host: %v", err)
		}
	})
}
