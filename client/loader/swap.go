//go:build linux

package loader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// oldProgram is a program of the revision Swap replaces.
type oldProgram struct {
	state ProgramState
	// linkIDs are the IDs of its pinned links.
	linkIDs []link.ID
}

// updatedLink is an old link Swap pointed at a new program.
type updatedLink struct {
	link    link.Link
	oldProg *ebpf.Program
}

// Swap replaces the loaded set old.Name with the artifact a (a new
// revision). It loads a, attaches every new program before the old one is
// detached — updating the old link in place (link.Update) for xdp, tcx,
// cgroup and netns links at the same hook, else attaching the new program
// beside the old one and then closing the old link — carries over the old
// revision's maps where the new revision declares a compatible map of the
// same name (not the globals' .rodata, .data and .bss), and finally
// removes the old revision.
//
// On any failure before the new revision is committed, the old revision is
// left running untouched and the error is returned (a verifier rejection,
// like Load's, as *ProgramError with the verifier log's tail).
//
// If the new revision runs but the old one could not be removed
// completely, Swap returns the new Loaded and an error saying what is left.
func Swap(ctx context.Context, old *Loaded, a *Artifact, opt Options) (_ *Loaded, err error) {
	if old == nil || a == nil {
		return nil, errors.New("swap: nil loaded set or artifact")
	}
	opt = opt.withDefaults()
	name := old.Name
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("swap: %w", err)
	}
	if a.Name != "" && a.Name != name {
		return nil, fmt.Errorf("swap %s: the artifact is for set %s", name, a.Name)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("swap %s: %w", name, err)
		}
	}()
	cur, err := readState(opt.StateDir, name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (no state file in %s)", ErrNotLoaded, opt.StateDir)
	}
	if err != nil {
		return nil, err
	}
	dir := setDir(opt.PinDir, name)
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("pins: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	if err := ensureBPFFS(opt.PinDir); err != nil {
		return nil, err
	}
	art := *a
	art.Name = name
	p, err := prepare(&art, opt)
	if err != nil {
		return nil, err
	}

	// Carry over the old maps the new revision declares alike.
	reuse := make(map[string]*ebpf.Map)
	defer func() {
		for _, m := range reuse {
			m.Close()
		}
	}()
	for _, ms := range cur.Maps {
		spec := p.spec.Maps[ms.Name]
		if spec == nil || isDataSection(ms.Name) {
			continue
		}
		m, err := ebpf.LoadPinnedMap(ms.Pinned, nil)
		if err != nil {
			continue
		}
		if spec.Compatible(m) != nil {
			m.Close()
			continue
		}
		reuse[ms.Name] = m
	}

	objs, err := loadObjects(ctx, p, reuse)
	if err != nil {
		return nil, err
	}
	defer objs.close()

	olds := make(map[string]*oldProgram)
	for _, st := range cur.Programs {
		op := &oldProgram{state: st}
		for _, ls := range st.Links {
			if lk, err := link.LoadPinnedLink(ls.Pinned, nil); err == nil {
				if info, err := lk.Info(); err == nil {
					op.linkIDs = append(op.linkIDs, info.ID)
				}
				lk.Close()
			}
		}
		olds[st.Name] = op
	}

	// Until the new revision is committed, any failure points the updated
	// links back at the old programs.
	var updated []updatedLink
	committed := false
	defer func() {
		for _, u := range updated {
			if !committed {
				u.link.Update(u.oldProg)
			}
			u.oldProg.Close()
		}
	}()

	if !opt.NoAttach {
		if objs.needTracefs() {
			if err := ensureTracefs(); err != nil {
				return nil, err
			}
		}
		var errs []error
		opt.Attach.usdt = &usdtState{maps: objs.maps, specs: make(map[string]uint32)}
		for _, pname := range slices.Sorted(maps.Keys(objs.progs)) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			ps := p.spec.Programs[pname]
			prog := objs.progs[pname]
			if u, a, ok := updateInPlace(olds[pname], pname, prog, ps, opt.Attach); ok {
				updated = append(updated, u)
				objs.attach[pname] = a
				continue
			}
			a, err := attachProgram(pname, prog, ps, opt.Attach)
			if err != nil {
				errs = append(errs, &ProgramError{Program: pname, Section: ps.SectionName, Op: "attach", Err: err})
				continue
			}
			objs.attach[pname] = a
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}

	// Pin the new revision beside the old one, then exchange them.
	staging := dir + "@swap-" + randomSuffix()
	if err := os.Mkdir(staging, 0o700); err != nil {
		return nil, fmt.Errorf("create staging pin directory: %w", err)
	}
	defer func() {
		if !committed {
			os.RemoveAll(staging)
		}
	}()
	unpinned, err := objs.pinTo(staging)
	if err != nil {
		return nil, err
	}
	revision := opt.Revision
	if revision == "" {
		revision = a.Revision
	}
	l, err := objs.loaded(name, revision, p.mode, dir, unpinned)
	if err != nil {
		return nil, err
	}
	tmpState, err := writeStateTemp(opt.StateDir, l)
	if err != nil {
		return nil, err
	}
	if err := exchangeDirs(staging, dir); err != nil {
		os.Remove(tmpState)
		return nil, fmt.Errorf("exchange pin directories: %w", err)
	}
	if err := os.Rename(tmpState, stateFile(opt.StateDir, name)); err != nil {
		os.Remove(tmpState)
		if xerr := exchangeDirs(staging, dir); xerr != nil {
			return nil, fmt.Errorf("write state: %w (and restoring the old pins: %v)", err, xerr)
		}
		return nil, fmt.Errorf("write state: %w", err)
	}
	committed = true
	l.keep = objs.takeUnpinnable()

	// The new revision runs: remove the old one, whose pins are now in
	// staging, but not the links it shares with the new one.
	keep := make(map[link.ID]bool)
	for _, u := range updated {
		if info, err := u.link.Info(); err == nil {
			keep[info.ID] = true
		}
	}
	if err := removePins(staging, keep); err != nil {
		return l, fmt.Errorf("the new revision runs, but removing the old one: %w", err)
	}
	return l, nil
}

// updateInPlace points the old program's link at prog when the hook
// supports it and is the same: it returns the link and an attachment
// holding a fresh, unpinned handle to it.
func updateInPlace(op *oldProgram, name string, prog *ebpf.Program, ps *ebpf.ProgramSpec, opt AttachOptions) (updatedLink, *attachment, bool) {
	if op == nil || len(op.linkIDs) != 1 || op.state.Section != ps.SectionName || op.state.Type != prog.Type().String() {
		return updatedLink{}, nil, false
	}
	point, err := updatablePoint(hookKind(ps.SectionName), ps, opt)
	if err != nil || point == "" || point != op.state.AttachPoint {
		return updatedLink{}, nil, false
	}
	oldProg, err := ebpf.LoadPinnedProgram(op.state.Pinned, nil)
	if err != nil {
		return updatedLink{}, nil, false
	}
	// A handle of our own, without the old pin's path, so that pinning
	// it adds a pin rather than moving the old one.
	lk, err := link.NewFromID(op.linkIDs[0])
	if err != nil {
		oldProg.Close()
		return updatedLink{}, nil, false
	}
	if err := lk.Update(prog); err != nil {
		lk.Close()
		oldProg.Close()
		return updatedLink{}, nil, false
	}
	// The attachment's Close only closes this handle: the link stays
	// pinned in the old directory until the swap commits or rolls back.
	return updatedLink{link: lk, oldProg: oldProg},
		&attachment{links: []link.Link{lk}, pins: []string{name}, point: point}, true
}

// exchangeDirs swaps two directories of the same bpffs atomically where
// the kernel allows (RENAME_EXCHANGE), else with two renames.
func exchangeDirs(a, b string) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	if err == nil || !(errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP)) {
		return err
	}
	tmp := a + "@x"
	if err := os.Rename(b, tmp); err != nil {
		return err
	}
	if err := os.Rename(a, b); err != nil {
		os.Rename(tmp, b)
		return err
	}
	return os.Rename(tmp, a)
}

// randomSuffix returns 8 random hex digits.
func randomSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
