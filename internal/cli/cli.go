// Package cli holds what bpfarm's two commands share: usage errors (exit
// status 2), BPFARM_<FLAG> environment defaults and flag-value parsing.
package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// UsageError marks a command-line mistake: exit status 2.
type UsageError struct{ error }

// Unwrap returns the wrapped error.
func (e UsageError) Unwrap() error { return e.error }

// Usage wraps err as a usage error.
func Usage(err error) error { return UsageError{err} }

// Usagef returns a formatted usage error.
func Usagef(format string, args ...any) error { return UsageError{fmt.Errorf(format, args...)} }

// IsUsage reports whether err is a usage error: a UsageError, or one of
// cobra's own argument and flag errors.
func IsUsage(err error) bool {
	var ue UsageError
	if errors.As(err, &ue) {
		return true
	}
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least",
		"requires exactly", "invalid argument", "flag needs an argument", "required flag"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// ApplyEnv fills every flag of cmd not given on the command line from
// BPFARM_<FLAG> in upper snake case (--s3-endpoint from
// BPFARM_S3_ENDPOINT).
func ApplyEnv(cmd *cobra.Command) error {
	var err error
	set := func(f *pflag.Flag) {
		if f.Changed || err != nil {
			return
		}
		env := "BPFARM_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := f.Value.Set(v); e != nil {
				err = Usagef("%s=%q: %v", env, v, e)
			}
			f.Changed = true
		}
	}
	cmd.Flags().VisitAll(set)
	cmd.InheritedFlags().VisitAll(set)
	return err
}

// SplitComma splits repeated, comma-separated flag values, dropping
// empty ones.
func SplitComma(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// KeyValues parses repeated NAME=VALUE flag values.
func KeyValues(flag string, vals []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return nil, Usagef("%s %q: want NAME=VALUE", flag, v)
		}
		out[k] = val
	}
	return out, nil
}

// DefaultTokenFile is where `bpfarm serve` with its default --data saves
// the admin token, relative to the directory it runs in: the CLI and the
// agent read it when given no token, so that the commands of the README
// work as typed next to `make run`.
const DefaultTokenFile = "data/admin.token"

// Token returns the API token to use: token when set, else the content of
// file when set, else that of DefaultTokenFile when it exists, else "".
func Token(token, file string) (string, error) {
	if token != "" {
		return token, nil
	}
	if file == "" {
		if _, err := os.Stat(DefaultTokenFile); err != nil {
			return "", nil
		}
		file = DefaultTokenFile
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
