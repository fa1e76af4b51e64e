//go:build !linux

package kconfig

import "errors"

func uname() (string, string, error) { return "", "", errors.New("kconfig: not Linux") }
func hasBPFCookie() bool             { return false }
func hasSyscallWrapper() bool        { return false }
