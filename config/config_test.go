package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/archipelago-go/archipelago/errs"
)

func mustParse(t *testing.T, text string) *Config {
	t.Helper()
	c, err := Parse("t.conf", []byte(text))
	if err != nil {
		t.Fatalf("Parse:\n%s\nerror:\n%v", text, err)
	}
	return c
}

// withPath returns a copy of c with Path set, for comparisons.
func withPath(c *Config, p string) *Config {
	d := *c
	d.Path = p
	d.Roles = slices.Clone(c.Roles)
	return &d
}

func roleNames(c *Config) []string {
	var n []string
	for _, r := range c.Roles {
		n = append(n, r.Name)
	}
	return n
}

func TestDefault(t *testing.T) {
	c := Default()
	if c.Path != "" {
		t.Errorf("Path = %q, want empty", c.Path)
	}
	host, _ := os.Hostname()
	if host != "" && c.HostID != host {
		t.Errorf("HostID = %q, want the hostname %q", c.HostID, host)
	}
	if c.RunDir != "/run/archipelago" || c.LogDir != "/var/log/archipelago" {
		t.Errorf("RunDir, LogDir = %q, %q", c.RunDir, c.LogDir)
	}
	wantX := XSEG{Name: "archipelago", Ports: 1024, DynPorts: 512, SizeMiB: 512,
		XsegbdStart: 0, XsegbdEnd: 15, VtoolStart: 1008, VtoolEnd: 1023}
	if c.XSEG != wantX {
		t.Errorf("XSEG = %+v, want %+v", c.XSEG, wantX)
	}
	if got, want := roleNames(c), []string{"blockerb", "blockerm", "mapperd", "vlmcd", "nbd"}; !slices.Equal(got, want) {
		t.Fatalf("roles %v, want %v", got, want)
	}
	want := []Role{
		{Name: "blockerb", Type: TypeFileBlocker, Hosted: true, PortStart: 500, PortEnd: 500, LogLevel: 2, NrOps: 64, NrThreads: 8,
			ArchipDir: "/var/lib/archipelago/data", LockDir: "/var/lib/archipelago/data/locks", FDCache: 256},
		{Name: "blockerm", Type: TypeFileBlocker, Hosted: true, PortStart: 501, PortEnd: 501, LogLevel: 2, NrOps: 64, NrThreads: 8,
			ArchipDir: "/var/lib/archipelago/maps", LockDir: "/var/lib/archipelago/maps/locks", FDCache: 256},
		{Name: "mapperd", Type: TypeMapperd, Hosted: true, PortStart: 502, PortEnd: 502, LogLevel: 2, NrOps: 512, NrThreads: 128,
			BlockerBPort: 500, BlockerMPort: 501},
		{Name: "vlmcd", Type: TypeVlmcd, Hosted: true, PortStart: 503, PortEnd: 503, LogLevel: 2, NrOps: 512, NrThreads: 128,
			BlockerPort: 500, MapperPort: 502},
		{Name: "nbd", Type: TypeNBDEndpoint, Hosted: true, PortStart: 0, PortEnd: 15, LogLevel: 2, NrOps: 256, NrThreads: 4,
			VlmcdPort: 503, MapperPort: 502, Socket: "/run/archipelago/nbd.sock",
			HandshakeTimeout: 10, TLS: TLSOff, TLSDir: "/etc/archipelago/tls", TLSVerifyClients: true},
	}
	for i := range want {
		if !reflect.DeepEqual(c.Roles[i], want[i]) {
			t.Errorf("role %d:\n got %+v\nwant %+v", i, c.Roles[i], want[i])
		}
	}
	if r, ok := c.Role("vlmcd"); !ok || r.PortStart != 503 {
		t.Errorf("Role(vlmcd) = %v, %v", r, ok)
	}
	if _, ok := c.Role("nope"); ok {
		t.Error("Role(nope) found")
	}
	bl := c.RolesOfType(TypeFileBlocker)
	if len(bl) != 2 || bl[0].Name != "blockerb" || bl[1].Name != "blockerm" || !bl[0].IsBlocker() {
		t.Errorf("RolesOfType(file_blocker) = %v", bl)
	}
	bl[0].NrOps = 99 // pointers into c
	if r, _ := c.Role("blockerb"); r.NrOps != 99 {
		t.Error("RolesOfType does not point into the config")
	}
	if len(c.RolesOfType(TypeRadosBlocker)) != 0 {
		t.Error("a rados blocker in the default")
	}
	if c.PidFile("nbd") != "/run/archipelago/nbd.pid" || c.LogFile("nbd") != "/var/log/archipelago/archipelagod.log" {
		t.Errorf("PidFile, LogFile = %s, %s", c.PidFile("nbd"), c.LogFile("nbd"))
	}
	if !c.Roles[4].Contains(15) || c.Roles[4].Contains(16) {
		t.Error("Contains")
	}
	// Each call is a fresh copy.
	if Default().Roles[0].NrOps != 64 {
		t.Error("Default shares state between calls")
	}
}

// The default text's roles agree with the per-type defaults that roles of
// one's own get, so that a role copied from the default behaves the same.
func TestDefaultTextMatchesTypeDefaults(t *testing.T) {
	def, err := readINI(DefaultName, []byte(DefaultText))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"blockerb", "blockerm", "mapperd", "vlmcd", "nbd"} {
		s := def.section(name)
		typ, _ := s.get("type")
		for k, v := range typeDefaults(name, typ.value) {
			if e, ok := s.get(k); ok && k != "archip_dir" && e.value != v {
				t.Errorf("[%s] %s = %s in the default text, %q for a %s of one's own", name, k, e.value, v, typ.value)
			}
		}
		for _, e := range s.entries {
			if !slices.Contains(commonKeys, e.key) && !slices.Contains(typeKeys[typ.value], e.key) {
				t.Errorf("[%s] %s: not a key of %s", name, e.key, typ.value)
			}
		}
	}
}

func TestEmptyFileIsDefault(t *testing.T) {
	for _, text := range []string{"", "\n\n", "# nothing\n; at all\n", "\ufeff[XSEG]\n", "[ARCHIPELAGO]\n[PEERS]\n"} {
		c := mustParse(t, text)
		if want := withPath(Default(), "t.conf"); !reflect.DeepEqual(c, want) {
			t.Errorf("%q:\n got %+v\nwant %+v", text, c, want)
		}
	}
}

func TestOneKey(t *testing.T) {
	c := mustParse(t, "[XSEG]\nSEGMENT_SIZE = 1024\n")
	want := withPath(Default(), "t.conf")
	want.XSEG.SizeMiB = 1024
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}

	c = mustParse(t, "[blockerb]\ndirect = yes\n")
	want = withPath(Default(), "t.conf")
	want.Roles[0].Direct = true
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
}

func TestSyntax(t *testing.T) {
	text := "\ufeff; comment\r\n  [XSEG]  \r\n\tsegment_size=128\r\n# SEGMENT_PORTS = 1\r\n[ARCHIPELAGO]\nHOST_ID = node-1.example\nRUN_DIR = /tmp/r//x/\n"
	c := mustParse(t, text)
	if c.XSEG.SizeMiB != 128 || c.XSEG.Ports != 1024 || c.HostID != "node-1.example" || c.RunDir != "/tmp/r/x" {
		t.Errorf("got %+v", c)
	}
	if r, _ := c.Role("nbd"); r.Socket != "/tmp/r/x/nbd.sock" {
		t.Errorf("socket %q does not follow RUN_DIR", r.Socket)
	}
}

func TestDerived(t *testing.T) {
	// Moving portno_start alone keeps the range's width.
	c := mustParse(t, "[XSEG]\nXSEGBD_END = 31\n[nbd]\nportno_start = 16\n[vlmcd]\nportno_start = 300\n")
	nbd, _ := c.Role("nbd")
	vl, _ := c.Role("vlmcd")
	if nbd.PortStart != 16 || nbd.PortEnd != 31 || vl.PortStart != 300 || vl.PortEnd != 300 {
		t.Errorf("nbd %d..%d, vlmcd %d..%d", nbd.PortStart, nbd.PortEnd, vl.PortStart, vl.PortEnd)
	}
	// References follow the roles they point at.
	if nbd.VlmcdPort != 300 {
		t.Errorf("nbd vlmcd_port %d, want 300", nbd.VlmcdPort)
	}
	// lock_dir follows archip_dir; explicit lock_dir wins.
	c = mustParse(t, "[blockerb]\narchip_dir = /srv/blocks\n[blockerm]\nlock_dir = /srv/locks\n")
	b, _ := c.Role("blockerb")
	m, _ := c.Role("blockerm")
	if b.LockDir != "/srv/blocks/locks" || m.LockDir != "/srv/locks" || m.ArchipDir != "/var/lib/archipelago/maps" {
		t.Errorf("blockerb %+v\nblockerm %+v", b, m)
	}
	// Changing a role's type keeps its common keys and drops the others.
	c = mustParse(t, "[blockerb]\ntype = rados_blocker\npool = blocks\n")
	b, _ = c.Role("blockerb")
	want := Role{Name: "blockerb", Type: TypeRadosBlocker, Hosted: true, PortStart: 500, PortEnd: 500, LogLevel: 2, NrOps: 64, NrThreads: 8,
		Pool: "blocks", CephConf: "/etc/ceph/ceph.conf", CephxID: "admin"}
	if !reflect.DeepEqual(*b, want) {
		t.Errorf("got %+v\nwant %+v", *b, want)
	}
	// cephx_id names the client; ceph_id is its old name.
	for _, text := range []string{"cephx_id = archip\n", "ceph_id = archip\n", "CEPHX_ID = archip\n"} {
		c = mustParse(t, "[blockerb]\ntype = rados_blocker\n"+text)
		if b, _ := c.Role("blockerb"); b.CephxID != "archip" {
			t.Errorf("%q: CephxID = %q, want archip", text, b.CephxID)
		}
	}
	// ROLES in a file replaces the default's; ORDER follows it.
	c = mustParse(t, "[PEERS]\nROLES = nbd, vlmcd, mapperd, blockerb\n")
	if got := roleNames(c); !slices.Equal(got, []string{"nbd", "vlmcd", "mapperd", "blockerb"}) {
		t.Errorf("roles %v", got)
	}
	mp, _ := c.Role("mapperd")
	if mp.BlockerBPort != 500 || mp.BlockerMPort != 500 {
		t.Errorf("with one blocker, mapperd points at %d and %d, want 500 twice", mp.BlockerBPort, mp.BlockerMPort)
	}
	// ORDER alone reorders the default roles.
	c = mustParse(t, "[PEERS]\nORDER = blockerm blockerb mapperd vlmcd nbd\n")
	if got := roleNames(c); !slices.Equal(got, []string{"blockerm", "blockerb", "mapperd", "vlmcd", "nbd"}) {
		t.Errorf("roles %v", got)
	}
}

func TestCustomRoleOnlyType(t *testing.T) {
	c := mustParse(t, `[PEERS]
ROLES = blockerb blockerm mapperd vlmcd nbd extra ceph mapper2 nbd2
[extra]
type = file_blocker
[ceph]
type = rados_blocker
[mapper2]
type = mapperd
[nbd2]
type = nbd_endpoint
[nbd]
portno_end = 7
`)
	want := []Role{
		{Name: "extra", Type: TypeFileBlocker, Hosted: true, PortStart: 504, PortEnd: 504, LogLevel: 2, NrOps: 64, NrThreads: 8,
			ArchipDir: "/var/lib/archipelago/extra", LockDir: "/var/lib/archipelago/extra/locks", FDCache: 256},
		{Name: "ceph", Type: TypeRadosBlocker, Hosted: true, PortStart: 505, PortEnd: 505, LogLevel: 2, NrOps: 64, NrThreads: 8,
			Pool: "ceph", CephConf: "/etc/ceph/ceph.conf", CephxID: "admin"},
		{Name: "mapper2", Type: TypeMapperd, Hosted: true, PortStart: 506, PortEnd: 506, LogLevel: 2, NrOps: 512, NrThreads: 128,
			BlockerBPort: 500, BlockerMPort: 501},
		{Name: "nbd2", Type: TypeNBDEndpoint, Hosted: true, PortStart: 8, PortEnd: 8, LogLevel: 2, NrOps: 256, NrThreads: 4,
			VlmcdPort: 503, MapperPort: 502, Socket: "/run/archipelago/nbd2.sock",
			HandshakeTimeout: 10, TLS: TLSOff, TLSDir: "/etc/archipelago/tls", TLSVerifyClients: true},
	}
	for _, w := range want {
		r, ok := c.Role(w.Name)
		if !ok {
			t.Fatalf("no role %s", w.Name)
		}
		if !reflect.DeepEqual(*r, w) {
			t.Errorf("got  %+v\nwant %+v", *r, w)
		}
	}
	// A role of one's own with only a type, in place of the defaults.
	c = mustParse(t, "[PEERS]\nROLES = store map comp\n[store]\ntype = file_blocker\n[map]\ntype = mapperd\n[comp]\ntype = vlmcd\n")
	st, _ := c.Role("store")
	mp, _ := c.Role("map")
	cp, _ := c.Role("comp")
	if st.PortStart != 16 || mp.PortStart != 17 || cp.PortStart != 18 || mp.BlockerBPort != 16 || cp.MapperPort != 17 || cp.BlockerPort != 16 {
		t.Errorf("store %+v\nmap %+v\ncomp %+v", st, mp, cp)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, text := range []string{
		"",
		`[ARCHIPELAGO]
HOST_ID = hv-7
RUN_DIR = /tmp/arch run
[XSEG]
SEGMENT_NAME = seg2
SEGMENT_PORTS = 2048
SEGMENT_DYNPORTS = 1024
SEGMENT_SIZE = 2048
XSEGBD_START = 100
XSEGBD_END = 131
VTOOL_START = 2000
VTOOL_END = 2047
[PEERS]
ROLES = blockerb blockerm mapperd vlmcd nbd extra
ORDER = blockerm blockerb mapperd vlmcd extra nbd
[blockerb]
type = rados_blocker
pool = blocks
ceph_id = archipelago
[blockerm]
fdcache = 10
direct = 1
lock_dir = /srv/locks
[vlmcd]
log_level = 3
[nbd]
portno_start = 100
portno_end = 115
listen = [::1]:10809
socket = /tmp/arch run/nbd.sock
[extra]
type = nbd_endpoint
listen = 127.0.0.1:10810
`,
	} {
		c := mustParse(t, text)
		out := c.Format()
		d, err := Parse("t.conf", []byte(out))
		if err != nil {
			t.Fatalf("Format output does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(c, d) {
			t.Errorf("round trip differs:\n got %+v\nwant %+v\n%s", d, c, out)
		}
		if out2 := d.Format(); out2 != out {
			t.Errorf("Format not stable:\n%s\n---\n%s", out, out2)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.conf")
	if err := os.WriteFile(p, []byte("[XSEG]\nSEGMENT_NAME = fromenv\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvVar, p)
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != p || c.XSEG.Name != "fromenv" {
		t.Errorf("Load via %s: Path %q, segment %q", EnvVar, c.Path, c.XSEG.Name)
	}
	// An explicit path wins over the environment.
	q := filepath.Join(dir, "b.conf")
	os.WriteFile(q, []byte("[XSEG]\nSEGMENT_NAME = explicit\n"), 0o644)
	if c, err := Load(q); err != nil || c.XSEG.Name != "explicit" {
		t.Errorf("Load(%s) = %+v, %v", q, c, err)
	}
	// A named file must exist.
	t.Setenv(EnvVar, filepath.Join(dir, "missing.conf"))
	if _, err := Load(""); !errors.Is(err, errs.ErrNotFound) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file via %s: %v", EnvVar, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.conf")); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("missing file: %v", err)
	}
	// A bad file: ErrInvalid, naming the file.
	os.WriteFile(q, []byte("[XSEG]\nSEGMENT_SIZE = big\n"), 0o644)
	if _, err := Load(q); !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), q+":2: ") {
		t.Errorf("bad file: %v", err)
	}
	// Neither: DefaultPath if present, else the built-in default.
	t.Setenv(EnvVar, "")
	c, err = Load("")
	if _, statErr := os.Stat(DefaultPath); statErr != nil {
		if err != nil || !reflect.DeepEqual(c, Default()) {
			t.Errorf("no file: %+v, %v", c, err)
		}
	} else if err == nil && c.Path != DefaultPath {
		t.Errorf("Path %q, want %q", c.Path, DefaultPath)
	}
}

func TestValidation(t *testing.T) {
	const roles = "[PEERS]\nROLES = blockerb blockerm mapperd vlmcd nbd "
	for _, tc := range []struct{ text, want string }{
		// syntax
		{"SEGMENT_SIZE = 1\n", `t.conf:1: SEGMENT_SIZE = 1: key outside any section`},
		{"[XSEG]\njunk\n", "t.conf:2: \"junk\": not a `key = value` line"},
		{"[XSEG\n", `t.conf:1: "[XSEG": section header without ]`},
		{"[XSEG] x\n", `t.conf:1: "[XSEG] x": text after the section header`},
		{"[XSEG]\n = 4\n", `t.conf:2: "= 4": no key before =`},
		{"[XSEG]\nSEGMENT_SIZE = 1024\nsegment_size = 2048\n", `t.conf:3: [XSEG] segment_size = 2048: duplicate key (first at line 2)`},
		{"[XSEG]\n[nbd]\n[XSEG]\n", `t.conf:3: [XSEG]: duplicate section (first at line 1)`},
		// sections and keys
		{"[FOO]\n", `t.conf:1: [FOO]: unknown section`},
		{"[xseg]\n", `t.conf:1: [xseg]: unknown section (section names are case-sensitive: [XSEG]?)`},
		{"[PEERS]\nROLES = blockerb blockerm mapperd vlmcd\n[nbd]\n", `t.conf:3: [nbd]: unknown section`},
		{"[XSEG]\nSEGMENT_FOO = 1\n", `t.conf:2: [XSEG] SEGMENT_FOO = 1: unknown key in [XSEG]`},
		{"[ARCHIPELAGO]\nUSER = archipelago\n", `t.conf:2: [ARCHIPELAGO] USER = archipelago: unknown key in [ARCHIPELAGO]`},
		{"[blockerb]\npool = p\n", `t.conf:2: [blockerb] pool = p: unknown key for a file_blocker (pool is a key of rados_blocker)`},
		{"[blockerb]\ntype = rados_blocker\ncephx_id = a\nceph_id = b\n", `t.conf:4: [blockerb] ceph_id = b: ceph_id is the old name of cephx_id, which is set too`},
		{"[blockerb]\ntype = rados_blocker\nceph_id = a b\n", `t.conf:3: [blockerb] ceph_id = a b: cephx client id with a space or control character`},
		{"[blockerb]\ncephx_id = a\n", `t.conf:2: [blockerb] cephx_id = a: unknown key for a file_blocker (cephx_id is a key of rados_blocker)`},
		{"[nbd]\nlogfile = /x\n", `t.conf:2: [nbd] logfile = /x: unknown key for a nbd_endpoint`},
		{"[mapperd]\nmapper_port = 1\n", `t.conf:2: [mapperd] mapper_port = 1: unknown key for a mapperd (mapper_port is a key of vlmcd, nbd_endpoint)`},
		// values
		{"[XSEG]\nSEGMENT_PORTS = lots\n", `t.conf:2: [XSEG] SEGMENT_PORTS = lots: not a number`},
		{"[XSEG]\nSEGMENT_SIZE = 1.5\n", `t.conf:2: [XSEG] SEGMENT_SIZE = 1.5: not a number`},
		{"[XSEG]\nSEGMENT_SIZE = 2\n", `t.conf:2: [XSEG] SEGMENT_SIZE = 2: must be at least 4`},
		{"[XSEG]\nSEGMENT_PORTS = 100000\n", `t.conf:2: [XSEG] SEGMENT_PORTS = 100000: must be at most 65536`},
		{"[XSEG]\nSEGMENT_NAME = a/b\n", `t.conf:2: [XSEG] SEGMENT_NAME = a/b: not a file name under /dev/shm`},
		{"[XSEG]\nSEGMENT_NAME =\n", `t.conf:2: [XSEG] SEGMENT_NAME = : empty segment name`},
		{"[blockerb]\nnr_ops = -4\n", `t.conf:2: [blockerb] nr_ops = -4: negative`},
		{"[blockerb]\nnr_ops = 99999999999999999999999\n", `t.conf:2: [blockerb] nr_ops = 99999999999999999999999: must be at most 65536`},
		{"[blockerb]\nnr_ops = -99999999999999999999999\n", `t.conf:2: [blockerb] nr_ops = -99999999999999999999999: negative`},
		{"[blockerb]\nnr_threads = 0\n", `t.conf:2: [blockerb] nr_threads = 0: must be at least 1`},
		{"[blockerb]\nfdcache = many\n", `t.conf:2: [blockerb] fdcache = many: not a number`},
		{"[blockerb]\ndirect = maybe\n", `t.conf:2: [blockerb] direct = maybe: not a boolean`},
		{"[blockerb]\nlog_level = 4\n", `t.conf:2: [blockerb] log_level = 4: log level outside 0-3`},
		{"[blockerb]\nlog_level = -1\n", `t.conf:2: [blockerb] log_level = -1: log level outside 0-3`},
		{"[blockerb]\nlog_level = debug\n", `t.conf:2: [blockerb] log_level = debug: not a number`},
		{"[blockerb]\ntype = tape_blocker\n", `t.conf:2: [blockerb] type = tape_blocker: unknown type`},
		{"[blockerb]\narchip_dir = data\n", `t.conf:2: [blockerb] archip_dir = data: not an absolute path`},
		{"[ARCHIPELAGO]\nRUN_DIR = run\n", `t.conf:2: [ARCHIPELAGO] RUN_DIR = run: not an absolute path`},
		{"[ARCHIPELAGO]\nHOST_ID = my host\n", `t.conf:2: [ARCHIPELAGO] HOST_ID = my host: host id with a space`},
		{"[nbd]\nlisten = localhost\n", `t.conf:2: [nbd] listen = localhost: not a TCP address host:port`},
		{"[nbd]\nlisten = localhost:http\n", `t.conf:2: [nbd] listen = localhost:http: port "http" is not a number in 1..65535`},
		{"[nbd]\nsocket = /" + strings.Repeat("s", 120) + "\n", `: longer than 107 bytes`},
		{"[blockerb]\ntype = rados_blocker\npool = a b\n", `t.conf:3: [blockerb] pool = a b: pool name with a space`},
		// roles and order
		{roles + "ghost\n", `t.conf:2: [PEERS] ROLES = blockerb blockerm mapperd vlmcd nbd ghost: role "ghost" has no section [ghost]`},
		{roles + "extra\n[extra]\nnr_ops = 4\n", `t.conf:3: [extra]: no type`},
		{roles + "nbd\n", `t.conf:2: [PEERS] ROLES = blockerb blockerm mapperd vlmcd nbd nbd: role "nbd" listed twice`},
		{roles + "x/y\n", `t.conf:2: [PEERS] ROLES = blockerb blockerm mapperd vlmcd nbd x/y: role name "x/y"`},
		{roles + "xseg\n", `role name "xseg"`},
		{"[PEERS]\nROLES = ,\n", `t.conf:2: [PEERS] ROLES = ,: no roles`},
		{"[PEERS]\nORDER = blockerb mapperd vlmcd nbd\n", `t.conf:2: [PEERS] ORDER = blockerb mapperd vlmcd nbd: role "blockerm" of [PEERS] ROLES is missing`},
		{"[PEERS]\nORDER = blockerb blockerm mapperd vlmcd nbd ghost\n", `t.conf:2: [PEERS] ORDER = blockerb blockerm mapperd vlmcd nbd ghost: role "ghost" is not in [PEERS] ROLES`},
		{"[PEERS]\nORDER = blockerb blockerm mapperd vlmcd nbd nbd\n", `: role "nbd" listed twice`},
		// ports
		{"[blockerb]\nportno_start = 5000\n", `t.conf:2: [blockerb] portno_start = 5000: outside the segment's 1024 ports`},
		{"[blockerb]\nportno_start = 510\nportno_end = 2000\n", `t.conf:3: [blockerb] portno_end = 2000: port 2000 outside the segment's 1024 ports`},
		{"[blockerb]\nportno_start = 600\n", `t.conf:2: [blockerb] portno_start = 600: at or above SEGMENT_DYNPORTS = 512`},
		{"[blockerb]\nportno_end = 512\n", `t.conf:2: [blockerb] portno_end = 512: port 512 at or above SEGMENT_DYNPORTS = 512`},
		{"[blockerb]\nportno_end = 499\n", `t.conf:2: [blockerb] portno_end = 499: below portno_start = 500`},
		{"[blockerm]\nportno_start = 500\n", `t.conf:2: [blockerm] portno_start = 500: ports 500..500 overlap [blockerb] ports 500..500`},
		{"[vlmcd]\nportno_start = 498\nportno_end = 501\n", `t.conf:2: [vlmcd] portno_start = 498: ports 498..501 overlap [blockerb] ports 500..500`},
		{"[vlmcd]\nportno_start = 10\n", `t.conf:2: [vlmcd] portno_start = 10: ports 10..10 overlap the block-endpoint ports XSEGBD_START..XSEGBD_END = 0..15`},
		{"[nbd]\nportno_start = 100\nportno_end = 100\n", `t.conf:2: [nbd] portno_start = 100: ports 100..100 outside the block-endpoint ports XSEGBD_START..XSEGBD_END = 0..15`},
		{"[XSEG]\nVTOOL_START = 400\nVTOOL_END = 410\n[vlmcd]\nportno_start = 405\n", `t.conf:5: [vlmcd] portno_start = 405: ports 405..405 overlap the vlmc ports VTOOL_START..VTOOL_END = 400..410`},
		{"[XSEG]\nVTOOL_START = 10\n", `t.conf:2: [XSEG] VTOOL_START = 10: VTOOL ports 10..1023 overlap XSEGBD ports 0..15`},
		{"[XSEG]\nVTOOL_END = 1024\n", `t.conf:2: [XSEG] VTOOL_END = 1024: outside the segment's 1024 ports`},
		{"[XSEG]\nVTOOL_END = 1000\n", `t.conf:2: [XSEG] VTOOL_END = 1000: below VTOOL_START = 1008`},
		{"[XSEG]\nSEGMENT_DYNPORTS = 1024\n", `t.conf:2: [XSEG] SEGMENT_DYNPORTS = 1024: at or above SEGMENT_PORTS = 1024`},
		{"[XSEG]\nXSEGBD_END = 600\n", `t.conf:2: [XSEG] XSEGBD_END = 600: at or above SEGMENT_DYNPORTS = 512`},
		{"[XSEG]\nXSEGBD_START = 20\n", `t.conf:1: [XSEG] XSEGBD_END = 15 (default): below XSEGBD_START = 20`},
		{"[XSEG]\nSEGMENT_PORTS = 512\nVTOOL_START = 505\nVTOOL_END = 511\n", `t.conf:1: [XSEG] SEGMENT_DYNPORTS = 512 (default): at or above SEGMENT_PORTS = 512`},
		{roles + "nbd2\n[nbd2]\ntype = nbd_endpoint\n", `t.conf:3: [nbd2] portno_start: no free port left in XSEGBD_START..XSEGBD_END = 0..15`},
		// references
		{"[mapperd]\nblockerb_port = 503\n", `t.conf:2: [mapperd] blockerb_port = 503: port 503 is [vlmcd], a vlmcd, not a file_blocker or rados_blocker`},
		{"[vlmcd]\nmapper_port = 300\n", `t.conf:2: [vlmcd] mapper_port = 300: port 300 is not a port of any role (want a mapperd)`},
		{"[nbd]\nvlmcd_port = 502\n", `t.conf:2: [nbd] vlmcd_port = 502: port 502 is [mapperd], a mapperd, not a vlmcd`},
		{"[vlmcd]\nblocker_port = x\n", `t.conf:2: [vlmcd] blocker_port = x: not a number`},
		{"[PEERS]\nROLES = blockerb blockerm vlmcd\n", `t.conf: [vlmcd] mapper_port: no role of type mapperd to point at`},
		{roles + "nbd2\n[nbd2]\ntype = nbd_endpoint\nportno_start = 0\n[nbd]\nportno_start = 1\nportno_end = 15\nsocket = /run/archipelago/nbd2.sock\n", `t.conf:9: [nbd] socket = /run/archipelago/nbd2.sock: also the socket of [nbd2]`},
		{roles + "nbd2\n[nbd2]\ntype = nbd_endpoint\nportno_start = 0\nlisten = [::1]:10809\n[nbd]\nportno_start = 1\nportno_end = 15\nlisten = [::1]:10809\n", `t.conf:6: [nbd2] listen = [::1]:10809: also the listen address of [nbd]`},
		// segment size
		{"[XSEG]\nSEGMENT_PORTS = 8192\nSEGMENT_DYNPORTS = 4096\n", `t.conf:1: [XSEG] SEGMENT_SIZE = 512 (default): too small for 8192 ports`},
		{"[XSEG]\nSEGMENT_SIZE = 16\n", `t.conf:2: [XSEG] SEGMENT_SIZE = 16: its pool of 256 requests is smaller than the 1408 the roles may have in flight`},
	} {
		_, err := Parse("t.conf", []byte(tc.text))
		if err == nil {
			t.Errorf("%q: no error, want %q", tc.text, tc.want)
			continue
		}
		if !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("%q: %v does not wrap ErrInvalid", tc.text, err)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %s", tc.text, err, tc.want)
		}
		if strings.Count(err.Error(), "\n") > 0 {
			t.Errorf("%q: more than one error:\n%v", tc.text, err)
		}
	}
}

// All problems come at once, in file order, each its own error.
func TestValidationCollectsAll(t *testing.T) {
	text := "[blockerb]\nlog_level = 9\nnr_ops = x\n[XSEG]\nSEGMENT_SIZE = y\n[bogus]\n"
	_, err := Parse("/etc/archipelago/archipelago.conf", []byte(text))
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		"/etc/archipelago/archipelago.conf:2: [blockerb] log_level = 9: ",
		"/etc/archipelago/archipelago.conf:3: [blockerb] nr_ops = x: ",
		"/etc/archipelago/archipelago.conf:5: [XSEG] SEGMENT_SIZE = y: ",
		"/etc/archipelago/archipelago.conf:6: [bogus]: ",
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(want), err)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("error %d: %q, want prefix %q", i, lines[i], want[i])
		}
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 4 {
		t.Fatalf("not a joined error of 4: %T", err)
	}
	for _, e := range joined.Unwrap() {
		if !errors.Is(e, errs.ErrInvalid) {
			t.Errorf("%v does not wrap ErrInvalid", e)
		}
	}
}

func TestFormatHeader(t *testing.T) {
	if !strings.HasPrefix(Default().Format(), "# Effective Archipelago configuration (file: none") {
		t.Error(Default().Format())
	}
	// DefaultText is what `archipelago config --default` prints: it
	// parses on its own, to the default.
	c := mustParse(t, DefaultText)
	if !reflect.DeepEqual(c, withPath(Default(), "t.conf")) {
		t.Error("DefaultText parsed as a file differs from Default()")
	}
}
