package main

// Verification on real kernels in `bpfarm programs show`.

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/bpfarm/bpfarm/api"
)

// printVerifications prints a revision's verifications: one line per
// kernel and program, with the verdict over both load modes.
func printVerifications(w io.Writer, revision string, vs []api.Verification) {
	printRevisionTable(w, "verified on real kernels:", "KERNEL\tPROGRAM\tVERDICT\tINSNS\tLOAD\tBOOT\tDETAIL", revision, vs,
		func(v api.Verification) (string, string) { return v.Revision, v.Kernel },
		func(tw io.Writer, v api.Verification) {
			boot := "-"
			if v.BootMS > 0 {
				boot = (time.Duration(v.BootMS) * time.Millisecond).Round(10*time.Millisecond).String() + " " + v.Accel
			}
			if v.State != "done" || len(v.Programs) == 0 {
				verdict := v.Result
				if v.State != "done" {
					verdict = v.State
				}
				fmt.Fprintf(tw, "  %s\t-\t%s\t-\t-\t%s\t%s\n", v.Kernel, verdict, boot, firstLine(v.Reason))
				return
			}
			for _, p := range combine(v.Programs) {
				verdict, detail := "accepted", ""
				if !p.accepted {
					verdict, detail = "rejected", p.err
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%.1fms\t%s\t%s\n", v.Kernel, p.name, verdict, p.insns, p.loadMS, boot, detail)
			}
		})
}

type programVerdict struct {
	name     string
	accepted bool
	insns    int
	loadMS   float64
	err      string
}

// combine merges a program's results over the load modes: accepted only
// if every mode was; the error of the first mode that was not.
func combine(ps []api.ProgramVerification) []programVerdict {
	var out []programVerdict
	at := map[string]int{}
	for _, p := range ps {
		i, ok := at[p.Program]
		if !ok {
			i = len(out)
			at[p.Program] = i
			out = append(out, programVerdict{name: p.Program, accepted: true})
		}
		v := &out[i]
		v.insns = max(v.insns, p.Instructions)
		v.loadMS = max(v.loadMS, p.LoadMS)
		if !p.Accepted {
			if v.accepted {
				who := "the loader"
				if p.Verifier {
					who = "the verifier"
				}
				v.err = fmt.Sprintf("%s (%s): %s", who, p.Mode, p.Error)
			}
			v.accepted = false
		}
	}
	return out
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
