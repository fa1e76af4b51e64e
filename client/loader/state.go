//go:build linux

package loader

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// statsSysctl tells whether the kernel collects BPF run statistics.
const statsSysctl = "/proc/sys/kernel/bpf_stats_enabled"

// stateFile is the path of set name's state file.
func stateFile(stateDir, name string) string {
	return filepath.Join(stateDir, name+".json")
}

// writeState writes l's state file atomically.
func writeState(stateDir string, l *Loaded) error {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	tmp, err := writeStateTemp(stateDir, l)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, stateFile(stateDir, l.Name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// writeStateTemp writes l's state to a temporary file beside its state
// file, and returns its name.
func writeStateTemp(stateDir string, l *Loaded) (string, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", fmt.Errorf("state directory: %w", err)
	}
	raw, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode state: %w", err)
	}
	f, err := os.CreateTemp(stateDir, "."+l.Name+".json.*")
	if err != nil {
		return "", fmt.Errorf("write state: %w", err)
	}
	_, werr := f.Write(append(raw, '\n'))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write state: %w", err)
	}
	return f.Name(), nil
}

// readState reads set name's state file.
func readState(stateDir, name string) (*Loaded, error) {
	raw, err := os.ReadFile(stateFile(stateDir, name))
	if err != nil {
		return nil, err
	}
	var l Loaded
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, fmt.Errorf("state %s: %w", stateFile(stateDir, name), err)
	}
	if l.Name != name {
		return nil, fmt.Errorf("state %s: names set %q", stateFile(stateDir, name), l.Name)
	}
	return &l, nil
}

// StatsEnabled reports whether the sysctl kernel.bpf_stats_enabled is on,
// so that the kernel counts program runs and run time for everyone.
// (Programs' counters also move while some process holds a BPF_ENABLE_STATS
// file descriptor, which the sysctl does not show.)
func StatsEnabled() (bool, error) {
	raw, err := os.ReadFile(statsSysctl)
	if err != nil {
		return false, fmt.Errorf("BPF stats: %w", err)
	}
	return strings.TrimSpace(string(raw)) != "0", nil
}

// refresh updates l from the kernel, through its pins: IDs, run counts,
// whether links are still there. It returns what is missing or changed.
func refresh(l *Loaded) []error {
	var problems []error
	for i := range l.Programs {
		st := &l.Programs[i]
		st.Error = ""
		prog, err := ebpf.LoadPinnedProgram(st.Pinned, nil)
		if err != nil {
			st.Error = fmt.Sprintf("program pin %s: %v", st.Pinned, err)
			problems = append(problems, fmt.Errorf("program %s: %s", st.Name, st.Error))
			st.Attached = false
			continue
		}
		if info, err := prog.Info(); err == nil {
			if id, ok := info.ID(); ok && uint32(id) != st.ID {
				st.Error = fmt.Sprintf("pinned program has ID %d, the state says %d", id, st.ID)
				problems = append(problems, fmt.Errorf("program %s: %s", st.Name, st.Error))
				st.ID = uint32(id)
			}
		}
		if stats, err := prog.Stats(); err == nil {
			st.RunCount = stats.RunCount
			st.RunTimeNS = uint64(stats.Runtime.Nanoseconds())
		}
		prog.Close()

		if len(st.Links) == 0 {
			continue
		}
		live := 0
		for j := range st.Links {
			ls := &st.Links[j]
			if ls.Pinned == "" {
				continue
			}
			lk, err := link.LoadPinnedLink(ls.Pinned, nil)
			if err != nil {
				problems = append(problems, fmt.Errorf("program %s: link pin %s: %w", st.Name, ls.Pinned, err))
				st.Error = fmt.Sprintf("link pin %s: %v", ls.Pinned, err)
				continue
			}
			info, err := lk.Info()
			lk.Close()
			if err != nil {
				problems = append(problems, fmt.Errorf("program %s: link %s: %w", st.Name, ls.Pinned, err))
				continue
			}
			if uint32(info.Program) != st.ID {
				st.Error = fmt.Sprintf("link %d runs program %d, not %d", info.ID, info.Program, st.ID)
				problems = append(problems, fmt.Errorf("program %s: %s", st.Name, st.Error))
				continue
			}
			ls.ID = uint32(info.ID)
			live++
		}
		st.Attached = live > 0
		st.LinkID = st.Links[0].ID
	}
	for i := range l.Maps {
		ms := &l.Maps[i]
		m, err := ebpf.LoadPinnedMap(ms.Pinned, &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			problems = append(problems, fmt.Errorf("map %s: pin %s: %w", ms.Name, ms.Pinned, err))
			continue
		}
		if info, err := m.Info(); err == nil {
			if id, ok := info.ID(); ok && uint32(id) != ms.ID {
				problems = append(problems, fmt.Errorf("map %s: pinned map has ID %d, the state says %d", ms.Name, id, ms.ID))
				ms.ID = uint32(id)
			}
		}
		ms.MaxEntries = m.MaxEntries()
		m.Close()
	}
	return problems
}

// Status lists the loaded sets, from their state files, with live
// information from the kernel: whether each program and link is still
// there, and run counts and times (see StatsEnabled). A program or link
// that vanished has its Error set.
func Status(opt Options) ([]Loaded, error) {
	opt = opt.withDefaults()
	entries, err := os.ReadDir(opt.StateDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	stats, _ := StatsEnabled()
	var out []Loaded
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || checkName(name) != nil {
			continue
		}
		l, err := readState(opt.StateDir, name)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // unloaded meanwhile
			}
			return nil, fmt.Errorf("status: %w", err)
		}
		refresh(l)
		l.StatsEnabled = stats
		out = append(out, *l)
	}
	slices.SortFunc(out, func(a, b Loaded) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// State returns the loaded set name as its state file records it, without
// checking its pins (see Adopt for that). A set that is not loaded is
// ErrNotLoaded.
func State(name string, opt Options) (*Loaded, error) {
	opt = opt.withDefaults()
	if err := checkName(name); err != nil {
		return nil, err
	}
	l, err := readState(opt.StateDir, name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (no state file in %s)", name, ErrNotLoaded, opt.StateDir)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return l, nil
}

// Adopt re-opens the loaded set name from its state file and pins, as a
// restarted daemon does: nothing is detached or reloaded. It checks that
// every program, link and map the state records is still pinned and is the
// same kernel object, and fails if one is not (Unload and Load it again).
func Adopt(name string, opt Options) (*Loaded, error) {
	opt = opt.withDefaults()
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	l, err := readState(opt.StateDir, name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("adopt %s: %w (no state file in %s)", name, ErrNotLoaded, opt.StateDir)
	}
	if err != nil {
		return nil, fmt.Errorf("adopt %s: %w", name, err)
	}
	if problems := refresh(l); len(problems) > 0 {
		return nil, fmt.Errorf("adopt %s: %w", name, errors.Join(problems...))
	}
	l.StatsEnabled, _ = StatsEnabled()
	return l, nil
}

// Unload detaches and unpins everything of the set name and removes its pin
// directory and state file, then waits (a few seconds at most) for the
// kernel to free the set's programs. Objects another process holds open
// stay until it closes them, and Unload reports such programs; their links
// are detached all the same where the kernel can detach them (xdp, tcx,
// cgroup and netns links).
func Unload(name string, opt Options) error {
	opt = opt.withDefaults()
	if err := checkName(name); err != nil {
		return fmt.Errorf("unload: %w", err)
	}
	dir := setDir(opt.PinDir, name)
	statePath := stateFile(opt.StateDir, name)
	_, stateErr := os.Stat(statePath)
	_, dirErr := os.Stat(dir)
	if errors.Is(stateErr, os.ErrNotExist) && errors.Is(dirErr, os.ErrNotExist) {
		return fmt.Errorf("unload %s: %w", name, ErrNotLoaded)
	}
	st, _ := readState(opt.StateDir, name)
	var errs []error
	if dirErr == nil {
		errs = append(errs, removePins(dir, nil))
	}
	if err := os.Remove(statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if st != nil && errors.Join(errs...) == nil {
		errs = append(errs, waitProgramsGone(st))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unload %s: %w", name, err)
	}
	return nil
}

// unloadWait bounds how long Unload waits for the kernel to free the
// set's programs (it frees some objects asynchronously).
const unloadWait = 5 * time.Second

// removePins releases everything pinned under dir and removes dir: links
// first (detached where the kernel can detach them), except those in keep,
// whose pins are only removed; then programs, then maps. Each is unpinned
// while this process holds it open and then closed, so that the kernel
// frees it right away when nothing else holds it.
func removePins(dir string, keep map[link.ID]bool) error {
	var errs []error
	for _, e := range readDir(filepath.Join(dir, linksDir)) {
		p := filepath.Join(dir, linksDir, e)
		lk, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			continue // removed below all the same
		}
		if info, err := lk.Info(); err == nil && keep[info.ID] {
			lk.Close()
			errs = append(errs, os.Remove(p))
			continue
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
		}
		if err := lk.Detach(); err != nil && !isNotSupported(err) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("detach %s: %w", p, err))
		}
		lk.Close()
	}
	for _, e := range readDir(filepath.Join(dir, progsDir)) {
		p := filepath.Join(dir, progsDir, e)
		prog, err := ebpf.LoadPinnedProgram(p, nil)
		if err != nil {
			continue
		}
		errs = append(errs, os.Remove(p))
		prog.Close()
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove pins: %w", err))
	}
	return errors.Join(errs...)
}

// readDir lists the names in dir, or none.
func readDir(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// waitProgramsGone waits, for a while, until the kernel has freed the
// programs of l, and says which are still loaded.
func waitProgramsGone(l *Loaded) error {
	deadline := time.Now().Add(unloadWait)
	for {
		var left []string
		for _, p := range l.Programs {
			if p.ID == 0 {
				continue
			}
			prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(p.ID))
			if err != nil {
				continue
			}
			prog.Close()
			left = append(left, fmt.Sprintf("%s (id %d)", p.Name, p.ID))
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still loaded, held open by another process: %s", strings.Join(left, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
