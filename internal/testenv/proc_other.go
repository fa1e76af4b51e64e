//go:build !linux

package testenv

import "os/exec"

// setProcAttr does nothing outside Linux.
func setProcAttr(cmd *exec.Cmd) {}

// killGroup kills cmd's process (not its group, outside Linux).
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
}
