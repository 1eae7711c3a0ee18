// Package crashtest runs a test binary's own helper test as a child
// process and SIGKILLs it at a moment the parent picks from the child's
// output: the harness of the crash-exactness tests of seglog, spool and
// tail.
package crashtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Run re-executes the test binary running only the test named helper,
// with env set to value in its environment (the helper returns at once
// when env is unset). Every line the child prints on stdout goes to line,
// also after the kill: lines already in the pipe were printed before the
// kill landed, so they describe work the child finished. The child is
// SIGKILLed the first time line returns true. Run reports whether it
// killed the child; a child that fails on its own fails the test.
func Run(t testing.TB, helper, env, value string, line func(string) (kill bool)) (killed bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+helper+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env+"="+value)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("stdout pipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if line(sc.Text()) && !killed {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatalf("kill child: %v", err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case killed && errors.As(err, &ee) && !ee.Success():
	case !killed && err == nil:
	default:
		t.Fatalf("child: %v (killed=%v)\n%s", err, killed, stderr.String())
	}
	return killed
}
