package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/archipelago-go/archipelago/errs"
)

// DefaultText is the built-in default configuration, commented. Load and
// Parse merge a file over it; `archipelago config --default` prints it.
//
//go:embed default.conf
var DefaultText string

// DefaultName stands for DefaultText in error messages.
const DefaultName = "<default>"

// DefaultPath is where Load looks when neither a path nor EnvVar is given.
const DefaultPath = "/etc/archipelago/archipelago.conf"

// EnvVar names the environment variable that overrides DefaultPath.
const EnvVar = "ARCHIPELAGO_CONFIG"

// Role types.
const (
	TypeFileBlocker  = "file_blocker"  // filed: one file per object
	TypeRadosBlocker = "rados_blocker" // radosd: one RADOS object per object
	TypeMapperd      = "mapperd"       // owns the volume maps
	TypeVlmcd        = "vlmcd"         // volume composer
	TypeNBDEndpoint  = "nbd_endpoint"  // serves volumes over NBD
)

// Types lists the role types in the order they usually start.
var Types = []string{TypeFileBlocker, TypeRadosBlocker, TypeMapperd, TypeVlmcd, TypeNBDEndpoint}

// HostProgram is the program that runs the roles of [PEERS] HOSTED
// together, as goroutines of one process (cmd/archipelagod).
const HostProgram = "archipelagod"

// HostableTypes are the role types HostProgram can run. A role of
// another type in HOSTED is an error of the configuration.
var HostableTypes = []string{TypeFileBlocker, TypeRadosBlocker, TypeMapperd, TypeVlmcd, TypeNBDEndpoint}

// HostedAll, alone as the value of [PEERS] HOSTED, stands for every role
// of ROLES.
const HostedAll = "all"

// Config is an effective configuration: the built-in default with a file
// merged over it, resolved (derived defaults filled in) and validated.
type Config struct {
	// Path is the file merged over the default; "" for the default alone.
	Path string

	// [ARCHIPELAGO]
	HostID string // HOST_ID: lock owner identity (default: the hostname)
	RunDir string // RUN_DIR: pidfiles, sockets, mounts
	LogDir string // LOG_DIR: one log per role
	// GCInterval (GC_INTERVAL, a duration such as 24h; 0, the default,
	// for never): mapperd collects garbage every GCInterval, jittered
	// by a quarter either way (docs/gc.md). One collector runs per pool
	// at a time, whichever host.
	GCInterval time.Duration

	XSEG XSEG // [XSEG]

	// Roles are the roles of [PEERS] ROLES, in ORDER (start order; stop
	// in reverse), each resolved from its section.
	Roles []Role
}

// XSEG is the [XSEG] section: the shared-memory segment and its port
// layout. Field names follow xseg.Config where they mean the same.
type XSEG struct {
	Name        string // SEGMENT_NAME: /dev/shm/<Name>
	Ports       int    // SEGMENT_PORTS: number of ports
	DynPorts    int    // SEGMENT_DYNPORTS: first dynamic port; below are static
	SizeMiB     int    // SEGMENT_SIZE, in MiB
	XsegbdStart int    // XSEGBD_START: first block-endpoint port
	XsegbdEnd   int    // XSEGBD_END: last block-endpoint port
	VtoolStart  int    // VTOOL_START: the original's first vlmc port; checked, used by no program
	VtoolEnd    int    // VTOOL_END: the original's last vlmc port; checked, used by no program
}

// Role is one peer: a [name] section. Fields that do not apply to the
// role's Type are zero.
type Role struct {
	Name string // section name, also the pidfile and log name
	Type string // one of the Type constants
	// Hosted: [PEERS] HOSTED lists it; archipelago start runs it in
	// HostProgram with the other hosted roles, not in its own program.
	Hosted bool

	// Common to every type.
	PortStart int // portno_start: first port bound
	PortEnd   int // portno_end: last port bound (inclusive)
	LogLevel  int // log_level: 0 errors, 1 warnings, 2 info, 3 debug
	NrOps     int // nr_ops: requests in flight at most
	NrThreads int // nr_threads: workers serving them

	// file_blocker
	ArchipDir string // archip_dir: where the objects are
	LockDir   string // lock_dir: where the locks are (default <ArchipDir>/locks)
	FDCache   int    // fdcache: files kept open at most; 0: none (each I/O opens its file)
	Direct    bool   // direct: O_DIRECT for aligned I/O

	// rados_blocker
	Pool      string // pool: RADOS pool (default: the role name)
	CephConf  string // ceph_conf: path of ceph.conf
	Namespace string // namespace: RADOS namespace of the objects ("" = the pool's default)
	CephxID   string // cephx_id (old name: ceph_id): client id, without "client."

	// MetricsListen (metrics_listen, mapperd and vlmcd): TCP address
	// host:port of the peer's Prometheus endpoint, "" for none (the
	// default). See docs/metrics.md.
	MetricsListen string

	// mapperd
	BlockerBPort int // blockerb_port: a port of the data blocker
	BlockerMPort int // blockerm_port: a port of the map blocker

	// vlmcd (MapperPort also for nbd_endpoint)
	BlockerPort int // blocker_port: a port of the data blocker
	MapperPort  int // mapper_port: a port of the mapper

	// nbd_endpoint
	VlmcdPort int    // vlmcd_port: a port of the volume composer
	Socket    string // socket: Unix socket path (default <RUN_DIR>/<Name>.sock)
	Listen    string // listen: TCP address, "" for none
	// HandshakeTimeout (handshake_timeout, seconds, default 10): a
	// connection that has not finished the NBD handshake (TLS included)
	// by then is closed.
	HandshakeTimeout int
	// TLS (tls): TLSOff, or TLSRequire: NBD over TCP only after
	// NBD_OPT_STARTTLS, with the certificates of TLSDir.
	TLS string
	// TLSDir (tls_dir, default /etc/archipelago/tls): server-cert.pem,
	// server-key.pem and ca-cert.pem, the layout of QEMU's tls-creds-x509.
	TLSDir string
	// TLSVerifyClients (tls_verify_clients, default true): clients must
	// present a certificate signed by TLSDir/ca-cert.pem.
	TLSVerifyClients bool
}

// TLS policies of an nbd_endpoint's TCP listener.
const (
	TLSOff     = "off"
	TLSRequire = "require"
)

// IsBlocker reports whether the role stores objects.
func (r *Role) IsBlocker() bool { return r.Type == TypeFileBlocker || r.Type == TypeRadosBlocker }

// Contains reports whether port is one of the role's ports.
func (r *Role) Contains(port int) bool { return port >= r.PortStart && port <= r.PortEnd }

// Role returns the role called name.
func (c *Config) Role(name string) (*Role, bool) {
	for i := range c.Roles {
		if c.Roles[i].Name == name {
			return &c.Roles[i], true
		}
	}
	return nil, false
}

// RolesOfType returns the roles of type t, in ORDER.
func (c *Config) RolesOfType(t string) []*Role {
	var out []*Role
	for i := range c.Roles {
		if c.Roles[i].Type == t {
			out = append(out, &c.Roles[i])
		}
	}
	return out
}

// PidFile is where the peer of role name writes its pid: <RUN_DIR>/<name>.pid.
func (c *Config) PidFile(name string) string { return filepath.Join(c.RunDir, name+".pid") }

// ClientsFile is where the block endpoint of role name keeps the number of
// NBD clients connected: <RUN_DIR>/<name>.clients.
func (c *Config) ClientsFile(name string) string { return filepath.Join(c.RunDir, name+".clients") }

// MappedDir holds one record per mapped volume (vlmc map):
// <RUN_DIR>/mapped.
func (c *Config) MappedDir() string { return filepath.Join(c.RunDir, "mapped") }

// MountDir holds the FUSE mounts of the mapped volumes: <RUN_DIR>/mnt.
func (c *Config) MountDir() string { return filepath.Join(c.RunDir, "mnt") }

// LogFile is the log of role name: <LOG_DIR>/<name>.log, or HostLogFile
// for a role of [PEERS] HOSTED (its process's output goes there).
func (c *Config) LogFile(name string) string {
	if r, ok := c.Role(name); ok && r.Hosted {
		return c.HostLogFile()
	}
	return filepath.Join(c.LogDir, name+".log")
}

// HostLogFile is the log of the HostProgram process that runs the roles
// of [PEERS] HOSTED: <LOG_DIR>/archipelagod.log.
func (c *Config) HostLogFile() string { return filepath.Join(c.LogDir, HostProgram+".log") }

// HostedRoles returns the roles of [PEERS] HOSTED, in ORDER.
func (c *Config) HostedRoles() []*Role {
	var out []*Role
	for i := range c.Roles {
		if c.Roles[i].Hosted {
			out = append(out, &c.Roles[i])
		}
	}
	return out
}

// Load reads the configuration. path "" means the file named by EnvVar if
// set, else DefaultPath if it exists, else the built-in default alone. A
// path given (or named by EnvVar) must exist: if not, the error wraps
// errs.ErrNotFound. Errors in the file wrap errs.ErrInvalid.
func Load(path string) (*Config, error) {
	if path == "" {
		path = os.Getenv(EnvVar)
	}
	if path == "" {
		data, err := os.ReadFile(DefaultPath)
		if errors.Is(err, fs.ErrNotExist) {
			return Default(), nil
		}
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		return Parse(DefaultPath, data)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("config %s: %w (%w)", path, errs.ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse merges data, the text of file name, over the built-in default and
// returns the effective configuration. All the problems found are
// returned at once (errors.Join), each naming the file, the line and the
// key, and each wrapping errs.ErrInvalid.
func Parse(name string, data []byte) (*Config, error) {
	if name == "" {
		name = "<config>"
	}
	def, err := readINI(DefaultName, []byte(DefaultText))
	if err != nil {
		return nil, fmt.Errorf("built-in default: %w", err)
	}
	f, err := readINI(name, data)
	if err != nil {
		return nil, err
	}
	c, err := resolve(f, def)
	if err != nil {
		return nil, err
	}
	c.Path = name
	return c, nil
}

// Default returns the built-in default configuration, HOST_ID set to this
// machine's hostname. Path is "".
func Default() *Config {
	def, err := readINI(DefaultName, []byte(DefaultText))
	if err == nil {
		var c *Config
		if c, err = resolve(&iniFile{name: DefaultName, byName: map[string]*section{}}, def); err == nil {
			return c
		}
	}
	panic("config: the built-in default is invalid: " + err.Error())
}

// Format prints c as a complete configuration file: every key, derived
// defaults included. Parse reads it back to the same Config.
func (c *Config) Format() string {
	var b strings.Builder
	src := c.Path
	if src == "" {
		src = "none, the built-in default alone"
	}
	fmt.Fprintf(&b, "# Effective Archipelago configuration (file: %s).\n", src)
	kv := func(k string, v any) {
		if s := quoteValue(fmt.Sprint(v)); s != "" {
			fmt.Fprintf(&b, "%s = %s\n", k, s)
		} else {
			fmt.Fprintf(&b, "%s =\n", k)
		}
	}
	b.WriteString("\n[ARCHIPELAGO]\n")
	kv("HOST_ID", c.HostID)
	kv("RUN_DIR", c.RunDir)
	kv("LOG_DIR", c.LogDir)
	if c.GCInterval == 0 {
		kv("GC_INTERVAL", 0)
	} else {
		kv("GC_INTERVAL", c.GCInterval)
	}
	x := c.XSEG
	b.WriteString("\n[XSEG]\n")
	kv("SEGMENT_NAME", x.Name)
	kv("SEGMENT_PORTS", x.Ports)
	kv("SEGMENT_DYNPORTS", x.DynPorts)
	kv("SEGMENT_SIZE", x.SizeMiB)
	kv("XSEGBD_START", x.XsegbdStart)
	kv("XSEGBD_END", x.XsegbdEnd)
	kv("VTOOL_START", x.VtoolStart)
	kv("VTOOL_END", x.VtoolEnd)
	names := make([]string, len(c.Roles))
	for i, r := range c.Roles {
		names[i] = r.Name
	}
	b.WriteString("\n[PEERS]\n")
	kv("ROLES", strings.Join(names, " "))
	kv("ORDER", strings.Join(names, " "))
	var hosted []string
	for _, r := range c.HostedRoles() {
		hosted = append(hosted, r.Name)
	}
	kv("HOSTED", strings.Join(hosted, " "))
	for _, r := range c.Roles {
		fmt.Fprintf(&b, "\n[%s]\n", r.Name)
		kv("type", r.Type)
		kv("portno_start", r.PortStart)
		kv("portno_end", r.PortEnd)
		kv("log_level", r.LogLevel)
		kv("nr_ops", r.NrOps)
		kv("nr_threads", r.NrThreads)
		switch r.Type {
		case TypeFileBlocker:
			kv("archip_dir", r.ArchipDir)
			kv("lock_dir", r.LockDir)
			kv("fdcache", r.FDCache)
			kv("direct", strconv.FormatBool(r.Direct))
		case TypeRadosBlocker:
			kv("pool", r.Pool)
			kv("namespace", r.Namespace)
			kv("ceph_conf", r.CephConf)
			kv("cephx_id", r.CephxID)
		case TypeMapperd:
			kv("blockerb_port", r.BlockerBPort)
			kv("blockerm_port", r.BlockerMPort)
			kv("metrics_listen", r.MetricsListen)
		case TypeVlmcd:
			kv("blocker_port", r.BlockerPort)
			kv("mapper_port", r.MapperPort)
			kv("metrics_listen", r.MetricsListen)
		case TypeNBDEndpoint:
			kv("vlmcd_port", r.VlmcdPort)
			kv("mapper_port", r.MapperPort)
			kv("socket", r.Socket)
			kv("listen", r.Listen)
			kv("handshake_timeout", r.HandshakeTimeout)
			kv("tls", r.TLS)
			kv("tls_dir", r.TLSDir)
			kv("tls_verify_clients", strconv.FormatBool(r.TLSVerifyClients))
		}
	}
	return b.String()
}

func joinErrors(list []error) error { return errors.Join(list...) }
