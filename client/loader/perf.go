//go:build linux

package loader

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// onlineCPUs lists the online CPUs, from /sys/devices/system/cpu/online
// ("0-3,5").
func onlineCPUs() ([]int, error) {
	raw, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return nil, fmt.Errorf("online CPUs: %w", err)
	}
	return parseCPUList(strings.TrimSpace(string(raw)))
}

// parseCPUList parses a kernel CPU list such as "0-3,5".
func parseCPUList(s string) ([]int, error) {
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("CPU list %q: %w", s, err)
		}
		last := first
		if isRange {
			if last, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("CPU list %q: %w", s, err)
			}
		}
		if last < first {
			return nil, fmt.Errorf("CPU list %q: bad range %s", s, part)
		}
		for c := first; c <= last; c++ {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		return nil, fmt.Errorf("CPU list %q is empty", s)
	}
	return cpus, nil
}

// perfAttachment is a perf_event program attached to a cpu-clock event on
// every online CPU.
type perfAttachment struct {
	links []link.Link
	cpus  []int
	// legacy holds the perf event fds of an attachment made with
	// PERF_EVENT_IOC_SET_BPF, on kernels without perf_event links: they
	// cannot be pinned.
	legacy []io.Closer
}

// fdCloser closes a raw fd.
type fdCloser int

func (fd fdCloser) Close() error { return unix.Close(int(fd)) }

// attachPerfEvent opens a cpu-clock software event sampling at freq Hz on
// every online CPU and attaches prog to each with a BPF link
// (BPF_PERF_EVENT), falling back to the PERF_EVENT_IOC_SET_BPF ioctl on
// kernels before 5.15, whose attachments can't be pinned.
func attachPerfEvent(prog *ebpf.Program, freq uint64) (_ *perfAttachment, err error) {
	cpus, err := onlineCPUs()
	if err != nil {
		return nil, err
	}
	pa := &perfAttachment{}
	defer func() {
		if err != nil {
			pa.Close()
		}
	}()
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_SOFTWARE,
		Config: unix.PERF_COUNT_SW_CPU_CLOCK,
		Size:   uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
		Sample: freq,
		Bits:   unix.PerfBitFreq,
	}
	for _, cpu := range cpus {
		fd, err := unix.PerfEventOpen(&attr, -1, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("open cpu-clock perf event on CPU %d: %w", cpu, err)
		}
		l, err := link.AttachRawLink(link.RawLinkOptions{Target: fd, Program: prog, Attach: ebpf.AttachPerfEvent})
		if err == nil {
			// The link holds the perf event.
			unix.Close(fd)
			pa.links = append(pa.links, l)
			pa.cpus = append(pa.cpus, cpu)
			continue
		}
		if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, unix.EINVAL) {
			unix.Close(fd)
			return nil, fmt.Errorf("link perf event on CPU %d: %w", cpu, err)
		}
		// Kernels before 5.15 have no perf_event links.
		if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_SET_BPF, prog.FD()); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("attach to perf event on CPU %d: %w", cpu, err)
		}
		if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_ENABLE, 0); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("enable perf event on CPU %d: %w", cpu, err)
		}
		pa.legacy = append(pa.legacy, fdCloser(fd))
		pa.cpus = append(pa.cpus, cpu)
	}
	return pa, nil
}

// Close detaches everything.
func (pa *perfAttachment) Close() error {
	var errs []error
	for _, l := range pa.links {
		errs = append(errs, l.Close())
	}
	for _, c := range pa.legacy {
		errs = append(errs, c.Close())
	}
	pa.links, pa.legacy = nil, nil
	return errors.Join(errs...)
}
