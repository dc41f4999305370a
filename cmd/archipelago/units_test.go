package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnits checks packaging/systemd/*.service with systemd-analyze
// verify, as installed but for the programs' paths: verify fails on a
// command that is not executable, and /usr/bin has no archipelago here,
// so a copy of each unit names this test's executable instead (verify
// only checks that it can run it; building the programs would add 10 s
// for nothing). --man=no: verify would run
// man(1) on the units' Documentation=man:... pages, which only the
// package installs. It also checks what the units must say (the commands
// the e2e tests run, Type=notify, no PrivateDevices).
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze here")
	}
	units, _ := filepath.Glob("../../packaging/systemd/*.service")
	if len(units) < 2 {
		t.Fatalf("units in packaging/systemd: %v", units)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := []string{"verify", "--man=no"}
	text := map[string]string{}
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text[filepath.Base(u)] = string(b)
		s := strings.ReplaceAll(string(b), "/usr/bin/archipelago ", self+" ")
		s = strings.ReplaceAll(s, "/usr/bin/vlmc ", self+" ")
		dst := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(dst, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, dst)
	}
	cmd := exec.Command(analyze, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for unit, lines := range map[string][]string{
		"archipelago.service": {"Type=notify", "ExecStart=/usr/bin/archipelago run\n", "KillMode=mixed", "Restart=on-failure",
			"RuntimeDirectory=archipelago", "RuntimeDirectoryPreserve=yes", "StateDirectory=archipelago", "LogsDirectory=archipelago",
			"After=network-online.target remote-fs.target"},
		"archipelago-map.service": {"Type=oneshot", "RemainAfterExit=yes", "Requires=archipelago.service", "After=archipelago.service",
			"ExecStart=/usr/bin/vlmc map --from /etc/archipelago/vlmcmap\n", "ExecStop=/usr/bin/vlmc unmap --from /etc/archipelago/vlmcmap\n"},
	} {
		for _, l := range lines {
			if !strings.Contains(text[unit], "\n"+l) {
				t.Errorf("%s lacks the line %q", unit, strings.TrimSpace(l))
			}
		}
		if strings.Contains(text[unit], "\nPrivateDevices=") {
			t.Errorf("%s sets PrivateDevices: the peers and map daemons need /dev/fuse and /dev/loop*", unit)
		}
	}
}
