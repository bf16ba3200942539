//go:build !unix

package charts_test

import "os/exec"

// killGroupOnCancel leaves cmd as it is: exec.CommandContext kills the
// process itself, the only thing it can do portably.
func killGroupOnCancel(*exec.Cmd) {}
