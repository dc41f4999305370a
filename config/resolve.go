package config

import (
	"errors"
	"fmt"
	"math/bits"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Global sections and their keys, in print order.
const (
	secArchipelago = "ARCHIPELAGO"
	secXSEG        = "XSEG"
	secPeers       = "PEERS"
)

var globalKeys = map[string][]string{
	secArchipelago: {"HOST_ID", "RUN_DIR", "LOG_DIR", "GC_INTERVAL"},
	secXSEG: {"SEGMENT_NAME", "SEGMENT_PORTS", "SEGMENT_DYNPORTS", "SEGMENT_SIZE",
		"XSEGBD_START", "XSEGBD_END", "VTOOL_START", "VTOOL_END"},
	secPeers: {"ROLES", "ORDER", "HOSTED"},
}

// Role keys: the common ones, then per type.
var commonKeys = []string{"type", "portno_start", "portno_end", "log_level", "nr_ops", "nr_threads"}

var typeKeys = map[string][]string{
	TypeFileBlocker:  {"archip_dir", "lock_dir", "fdcache", "direct"},
	TypeRadosBlocker: {"pool", "namespace", "ceph_conf", "cephx_id", "ceph_id"}, // ceph_id: old name of cephx_id
	TypeMapperd:      {"blockerb_port", "blockerm_port", "metrics_listen"},
	TypeVlmcd:        {"blocker_port", "mapper_port", "metrics_listen"},
	TypeNBDEndpoint: {"vlmcd_port", "mapper_port", "socket", "listen", "handshake_timeout",
		"tls", "tls_dir", "tls_verify_clients"},
}

// typeDefaults are the values of a role's keys that neither the file nor
// the default text's section of that role sets. Keys derived from other
// values (lock_dir, socket, the *_port references) are filled in later.
// The default text's roles use the same values; a test keeps them equal.
func typeDefaults(name, typ string) map[string]string {
	d := map[string]string{"log_level": "2"}
	switch typ {
	case TypeFileBlocker:
		d["nr_ops"], d["nr_threads"] = "64", "8"
		d["archip_dir"] = "/var/lib/archipelago/" + name
		d["fdcache"], d["direct"] = "256", "false"
	case TypeRadosBlocker:
		d["nr_ops"], d["nr_threads"] = "64", "8"
		d["pool"], d["ceph_conf"], d["cephx_id"] = name, "/etc/ceph/ceph.conf", "admin"
		d["namespace"] = ""
	case TypeMapperd, TypeVlmcd:
		// Their workers mostly wait (for locks, for the blockers), so
		// they have many.
		d["nr_ops"], d["nr_threads"] = "512", "128"
		d["metrics_listen"] = ""
	case TypeNBDEndpoint:
		d["nr_ops"], d["nr_threads"] = "256", "4"
		d["listen"] = ""
		d["handshake_timeout"] = "10"
		d["tls"], d["tls_dir"], d["tls_verify_clients"] = "off", "/etc/archipelago/tls", "true"
	}
	return d
}

// val is a value with where it came from, for error messages.
type val struct {
	sec, key, value string
	set             bool // found in the file or the default text, or derived
	line            int  // line in the user's file, 0 if not from there
	secLine         int  // line of the section header in the user's file, 0 if none
	fromDefault     bool // from the built-in default (or derived)
}

// resolver merges a file over the default text and checks the result.
type resolver struct {
	f, def *iniFile
	errs   []error
}

func (r *resolver) fail(v val, format string, args ...any) {
	e := &lineError{file: r.f.name, line: v.line, msg: fmt.Sprintf(format, args...)}
	if e.line == 0 {
		e.line = v.secLine
	}
	e.what = "[" + v.sec + "]"
	if v.key != "" {
		e.what += " " + v.key
		if v.set {
			e.what += " = " + v.value
			if v.fromDefault {
				e.what += " (default)"
			}
		}
	}
	r.errs = append(r.errs, e)
}

// lookup finds key in the user's section fs, else in the default text's
// section ds, else in extra (derived defaults).
func (r *resolver) lookup(secName string, fs, ds *section, extra map[string]string, key string) val {
	v := val{sec: secName, key: key}
	if fs != nil {
		v.secLine = fs.line
	}
	if e, ok := fs.get(key); ok {
		v.value, v.set, v.line = e.value, true, e.line
		return v
	}
	v.fromDefault = true
	if e, ok := ds.get(key); ok {
		v.value, v.set = e.value, true
		return v
	}
	if s, ok := extra[key]; ok {
		v.value, v.set = s, true
	}
	return v
}

// integer parses v as a whole number in lo..hi.
func (r *resolver) integer(v val, lo, hi int) (int, bool) {
	n, err := strconv.Atoi(v.value)
	switch {
	case errors.Is(err, strconv.ErrRange) && strings.HasPrefix(v.value, "-"):
		r.fail(v, "negative")
	case errors.Is(err, strconv.ErrRange):
		r.fail(v, "must be at most %d", hi)
	case err != nil:
		r.fail(v, "not a number")
	case n < 0:
		r.fail(v, "negative")
	case n < lo:
		r.fail(v, "must be at least %d", lo)
	case n > hi:
		r.fail(v, "must be at most %d", hi)
	default:
		return n, true
	}
	return 0, false
}

func (r *resolver) boolean(v val) (bool, bool) {
	switch strings.ToLower(v.value) {
	case "true", "yes", "1", "on":
		return true, true
	case "false", "no", "0", "off":
		return false, true
	}
	r.fail(v, "not a boolean (true/false, yes/no, 1/0)")
	return false, false
}

// interval parses v as a duration (1h30m, 24h, 90s), 0 for never, else
// at least lo.
func (r *resolver) interval(v val, lo time.Duration) (time.Duration, bool) {
	d, err := time.ParseDuration(v.value)
	switch {
	case v.value == "0":
		return 0, true
	case err != nil:
		r.fail(v, "not a duration (a number with a unit: 90s, 30m, 24h; 0 for never)")
	case d < 0:
		r.fail(v, "negative")
	case d > 0 && d < lo:
		r.fail(v, "must be at least %v (or 0 for never)", lo)
	default:
		return d, true
	}
	return 0, false
}

func (r *resolver) absPath(v val) (string, bool) {
	if !filepath.IsAbs(v.value) {
		r.fail(v, "not an absolute path")
		return "", false
	}
	return filepath.Clean(v.value), true
}

// word checks a value that must be one printable token (ids, names).
func (r *resolver) word(v val, what string, maxLen int) (string, bool) {
	switch {
	case v.value == "":
		r.fail(v, "empty %s", what)
	case len(v.value) > maxLen:
		r.fail(v, "%s longer than %d bytes", what, maxLen)
	case strings.IndexFunc(v.value, func(c rune) bool { return c <= ' ' || c == 0x7f }) >= 0:
		r.fail(v, "%s with a space or control character", what)
	default:
		return v.value, true
	}
	return "", false
}

// checkKeys reports the keys of the user's section that are not in known.
func (r *resolver) checkKeys(s *section, known []string, what string, hint func(key string) string) {
	if s == nil {
		return
	}
	for _, e := range s.entries {
		if slices.ContainsFunc(known, func(k string) bool { return strings.EqualFold(k, e.key) }) {
			continue
		}
		msg := "unknown key " + what
		if hint != nil {
			if h := hint(e.key); h != "" {
				msg += " (" + h + ")"
			}
		}
		r.fail(val{sec: s.name, key: e.key, value: e.value, set: true, line: e.line}, "%s", msg)
	}
}

func isGlobal(name string) bool {
	return name == secArchipelago || name == secXSEG || name == secPeers
}

func validRoleName(s string) bool {
	if s == "" || len(s) > 64 || isGlobal(strings.ToUpper(s)) {
		return false
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			i > 0 && (c == '_' || c == '-' || c == '.')
		if !ok {
			return false
		}
	}
	return true
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(c rune) bool { return c == ',' || c == ' ' || c == '\t' })
}

// portRange is a range of ports with where it came from.
type portRange struct {
	start, end int
	what       string // e.g. "[blockerb] ports 500..500"
}

func (p portRange) overlaps(q portRange) bool { return p.start <= q.end && q.start <= p.end }

// roleState is a role being resolved.
type roleState struct {
	Role
	fs, ds   *section // user's section; default text's section (nil if none)
	dsTyped  *section // ds if of the same type, else nil
	extra    map[string]string
	startV   val
	endV     val
	portsSet bool // ports given (file or default text); else assigned
	portsOK  bool // ports parsed (and, once checked, valid)
}

func (rs *roleState) get(r *resolver, key string) val {
	ds := rs.dsTyped
	if slices.Contains(commonKeys, key) {
		ds = rs.ds
	}
	return r.lookup(rs.Name, rs.fs, ds, rs.extra, key)
}

func resolve(f, def *iniFile) (*Config, error) {
	r := &resolver{f: f, def: def}
	c := &Config{}

	// Unknown sections are reported once ROLES is known; global keys now.
	for _, name := range []string{secArchipelago, secXSEG, secPeers} {
		r.checkKeys(f.section(name), globalKeys[name], "in ["+name+"]", nil)
	}
	g := func(sec, key string) val { return r.lookup(sec, f.section(sec), def.section(sec), nil, key) }

	// [ARCHIPELAGO]
	if v := g(secArchipelago, "HOST_ID"); v.value != "" {
		c.HostID, _ = r.word(v, "host id", 200)
	} else {
		c.HostID = hostname()
	}
	c.RunDir, _ = r.absPath(g(secArchipelago, "RUN_DIR"))
	c.LogDir, _ = r.absPath(g(secArchipelago, "LOG_DIR"))
	c.GCInterval, _ = r.interval(g(secArchipelago, "GC_INTERVAL"), time.Second)

	// [XSEG]
	x := &c.XSEG
	xv := map[string]val{}
	for _, k := range globalKeys[secXSEG] {
		xv[k] = g(secXSEG, k)
	}
	xok := true
	num := func(k string, lo, hi int, dst *int) {
		n, ok := r.integer(xv[k], lo, hi)
		*dst = n
		xok = xok && ok
	}
	if v := xv["SEGMENT_NAME"]; v.value == "." || v.value == ".." || strings.Contains(v.value, "/") {
		r.fail(v, "not a file name under /dev/shm")
		xok = false
	} else if x.Name, _ = r.word(v, "segment name", 200); x.Name == "" {
		xok = false
	}
	num("SEGMENT_PORTS", 1, 65536, &x.Ports)
	num("SEGMENT_DYNPORTS", 0, 65536, &x.DynPorts)
	num("SEGMENT_SIZE", 4, 1<<20, &x.SizeMiB)
	num("XSEGBD_START", 0, 65535, &x.XsegbdStart)
	num("XSEGBD_END", 0, 65535, &x.XsegbdEnd)
	num("VTOOL_START", 0, 65535, &x.VtoolStart)
	num("VTOOL_END", 0, 65535, &x.VtoolEnd)
	if xok {
		xok = r.checkXSEG(x, xv)
	}

	// [PEERS]
	rolesV, orderV := g(secPeers, "ROLES"), g(secPeers, "ORDER")
	roles := r.roleList(rolesV)
	order := roles // ROLES from the file without ORDER: ORDER follows ROLES
	if !orderV.fromDefault || rolesV.fromDefault {
		order = r.orderList(orderV, roles)
	}

	// Sections of the file that are neither global nor a role.
	for _, s := range f.sections {
		if isGlobal(s.name) || slices.Contains(roles, s.name) {
			continue
		}
		msg := "unknown section: neither ARCHIPELAGO, XSEG, PEERS nor a role listed in [PEERS] ROLES"
		if up := strings.ToUpper(s.name); isGlobal(up) {
			msg = "unknown section (section names are case-sensitive: [" + up + "]?)"
		}
		r.fail(val{sec: s.name, secLine: s.line}, "%s", msg)
	}

	// Each role's own keys.
	var states []*roleState
	for _, name := range order {
		if rs := r.role(name, rolesV, c.RunDir); rs != nil {
			states = append(states, rs)
		}
	}
	r.hosted(g(secPeers, "HOSTED"), roles, states)

	// Ports: given ones first, then the others assigned around them.
	if xok {
		r.checkPorts(x, xv, states)
		r.assignPorts(x, states)
	}
	r.resolveRefs(states)
	r.checkUnique(states)
	r.checkMetricsAddrs(states)
	if xok {
		r.checkSize(x, xv, states)
	}

	if len(r.errs) > 0 {
		return nil, joinErrors(sortErrors(r.errs))
	}
	for _, rs := range states {
		c.Roles = append(c.Roles, rs.Role)
	}
	return c, nil
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// checkXSEG checks the segment's port layout.
func (r *resolver) checkXSEG(x *XSEG, xv map[string]val) bool {
	n := len(r.errs)
	if x.DynPorts >= x.Ports {
		r.fail(xv["SEGMENT_DYNPORTS"], "at or above SEGMENT_PORTS = %d: no dynamic ports left for the tools", x.Ports)
	}
	if x.XsegbdEnd < x.XsegbdStart {
		r.fail(xv["XSEGBD_END"], "below XSEGBD_START = %d", x.XsegbdStart)
	} else if x.XsegbdEnd >= x.DynPorts {
		r.fail(xv["XSEGBD_END"], "at or above SEGMENT_DYNPORTS = %d: block-endpoint ports are static", x.DynPorts)
	}
	if x.VtoolEnd < x.VtoolStart {
		r.fail(xv["VTOOL_END"], "below VTOOL_START = %d", x.VtoolStart)
	} else if x.VtoolStart >= x.Ports {
		r.fail(xv["VTOOL_START"], "outside the segment's %d ports", x.Ports)
	} else if x.VtoolEnd >= x.Ports {
		r.fail(xv["VTOOL_END"], "outside the segment's %d ports", x.Ports)
	} else if x.VtoolStart <= x.XsegbdEnd && x.XsegbdStart <= x.VtoolEnd {
		r.fail(xv["VTOOL_START"], "VTOOL ports %d..%d overlap XSEGBD ports %d..%d", x.VtoolStart, x.VtoolEnd, x.XsegbdStart, x.XsegbdEnd)
	}
	return len(r.errs) == n
}

// roleList parses ROLES.
func (r *resolver) roleList(v val) []string {
	names := splitList(v.value)
	if len(names) == 0 {
		r.fail(v, "no roles")
	}
	var out []string
	for _, n := range names {
		switch {
		case !validRoleName(n):
			r.fail(v, "role name %q: letters, digits, _ - . (first a letter or digit), at most 64, not a global section", n)
		case slices.Contains(out, n):
			r.fail(v, "role %q listed twice", n)
		default:
			out = append(out, n)
		}
	}
	return out
}

// orderList parses ORDER and checks that it is a permutation of roles;
// if it is not, the roles' order stands in for it.
func (r *resolver) orderList(v val, roles []string) []string {
	var out []string
	ok := true
	for _, n := range splitList(v.value) {
		switch {
		case !slices.Contains(roles, n):
			r.fail(v, "role %q is not in [PEERS] ROLES", n)
			ok = false
		case slices.Contains(out, n):
			r.fail(v, "role %q listed twice", n)
			ok = false
		default:
			out = append(out, n)
		}
	}
	for _, n := range roles {
		if !slices.Contains(out, n) {
			r.fail(v, "role %q of [PEERS] ROLES is missing: ORDER must list every role once", n)
			ok = false
		}
	}
	if !ok {
		return roles
	}
	return out
}

// hosted parses HOSTED: names of ROLES (or the word HostedAll for every
// role), each of a type archipelagod hosts; it sets their Hosted.
func (r *resolver) hosted(v val, roles []string, states []*roleState) {
	names := splitList(v.value)
	if len(names) == 1 && names[0] == HostedAll {
		names = roles
	}
	var seen []string
	for _, n := range names {
		switch {
		case n == HostedAll:
			r.fail(v, "%q stands alone (every role) or not at all", HostedAll)
			continue
		case !slices.Contains(roles, n):
			r.fail(v, "role %q is not in [PEERS] ROLES", n)
			continue
		case slices.Contains(seen, n):
			r.fail(v, "role %q listed twice", n)
			continue
		}
		seen = append(seen, n)
		for _, rs := range states {
			if rs.Name != n {
				continue
			}
			if !slices.Contains(HostableTypes, rs.Type) {
				r.fail(v, "role %q is of type %s, which %s cannot host (it hosts %s): run it in its own program (leave it out of HOSTED)",
					n, rs.Type, HostProgram, strings.Join(HostableTypes, ", "))
				continue
			}
			rs.Hosted = true
		}
	}
}

// role resolves the keys of one role that depend on its section only.
func (r *resolver) role(name string, rolesV val, runDir string) *roleState {
	rs := &roleState{fs: r.f.section(name), ds: r.def.section(name)}
	rs.Name = name
	tv := r.lookup(name, rs.fs, rs.ds, nil, "type")
	switch {
	case !tv.set && rs.fs == nil:
		r.fail(rolesV, "role %q has no section [%s]", name, name)
		return nil
	case !tv.set:
		r.fail(val{sec: name, secLine: rs.fs.line}, "no type: a role of your own needs `type = %s`", strings.Join(Types, " | "))
		return nil
	case !slices.Contains(Types, tv.value):
		r.fail(tv, "unknown type (known: %s)", strings.Join(Types, ", "))
		return nil
	}
	rs.Type = tv.value
	if e, ok := rs.ds.get("type"); ok && e.value == rs.Type {
		rs.dsTyped = rs.ds
	}
	rs.extra = typeDefaults(name, rs.Type)
	known := append(slices.Clone(commonKeys), typeKeys[rs.Type]...)
	r.checkKeys(rs.fs, known, "for a "+rs.Type, func(key string) string {
		var of []string
		for _, t := range Types {
			if slices.ContainsFunc(typeKeys[t], func(k string) bool { return strings.EqualFold(k, key) }) {
				of = append(of, t)
			}
		}
		if len(of) == 0 {
			return ""
		}
		return key + " is a key of " + strings.Join(of, ", ")
	})

	// Common keys; ports are checked together later.
	rs.LogLevel = r.levelKey(rs.get(r, "log_level"))
	rs.NrOps, _ = r.integer(rs.get(r, "nr_ops"), 1, 65536)
	rs.NrThreads, _ = r.integer(rs.get(r, "nr_threads"), 1, 1024)
	r.portKeys(rs)

	switch rs.Type {
	case TypeMapperd, TypeVlmcd:
		if v := rs.get(r, "metrics_listen"); v.value != "" {
			rs.MetricsListen, _ = r.tcpAddr(v)
		}
	case TypeFileBlocker:
		rs.ArchipDir, _ = r.absPath(rs.get(r, "archip_dir"))
		if v := rs.get(r, "lock_dir"); v.set {
			rs.LockDir, _ = r.absPath(v)
		} else if rs.ArchipDir != "" {
			rs.LockDir = filepath.Join(rs.ArchipDir, "locks")
		}
		rs.FDCache, _ = r.integer(rs.get(r, "fdcache"), 0, 1<<20) // 0: no file kept open
		rs.Direct, _ = r.boolean(rs.get(r, "direct"))
	case TypeRadosBlocker:
		rs.Pool, _ = r.word(rs.get(r, "pool"), "pool name", 255)
		if v := rs.get(r, "namespace"); v.value != "" {
			rs.Namespace, _ = r.word(v, "namespace", 255)
		}
		rs.CephConf, _ = r.absPath(rs.get(r, "ceph_conf"))
		v := rs.get(r, "cephx_id")
		if old, ok := rs.fs.get("ceph_id"); ok {
			// ceph_id is the old name of cephx_id.
			oldV := val{sec: rs.Name, key: old.key, value: old.value, set: true, line: old.line, secLine: v.secLine}
			if v.line != 0 {
				r.fail(oldV, "ceph_id is the old name of cephx_id, which is set too")
			} else {
				v = oldV
			}
		}
		rs.CephxID, _ = r.word(v, "cephx client id", 255)
	case TypeNBDEndpoint:
		v := rs.get(r, "socket")
		if !v.set && runDir != "" {
			v.value, v.set = filepath.Join(runDir, name+".sock"), true
		}
		if !v.set {
			// RUN_DIR is wrong, and said so.
		} else if s, ok := r.absPath(v); ok {
			if len(s) > 107 {
				r.fail(v, "longer than 107 bytes, the limit of a Unix socket path")
			}
			rs.Socket = s
		}
		if v := rs.get(r, "listen"); v.value != "" {
			rs.Listen, _ = r.tcpAddr(v)
		}
		rs.HandshakeTimeout, _ = r.integer(rs.get(r, "handshake_timeout"), 1, 3600)
		rs.TLSDir, _ = r.absPath(rs.get(r, "tls_dir"))
		rs.TLSVerifyClients, _ = r.boolean(rs.get(r, "tls_verify_clients"))
		switch v := rs.get(r, "tls"); strings.ToLower(v.value) {
		case TLSOff:
			rs.TLS = TLSOff
		case TLSRequire:
			rs.TLS = TLSRequire
			if rs.get(r, "listen").value == "" {
				r.fail(v, "no listen address: TLS is for NBD over TCP (the Unix socket is guarded by its permissions)")
			}
		default:
			r.fail(v, "not a TLS policy (%s or %s)", TLSOff, TLSRequire)
		}
	}
	return rs
}

// tcpAddr checks a TCP address host:port to listen on (the host may be
// empty: every address).
func (r *resolver) tcpAddr(v val) (string, bool) {
	host, port, err := net.SplitHostPort(v.value)
	if err != nil {
		r.fail(v, "not a TCP address host:port (%v)", err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		r.fail(v, "port %q is not a number in 1..65535", port)
	} else if strings.ContainsAny(host, " \t") {
		r.fail(v, "bad host %q", host)
	} else {
		return v.value, true
	}
	return "", false
}

func (r *resolver) levelKey(v val) int {
	n, err := strconv.Atoi(v.value)
	if err != nil {
		r.integer(v, 0, 3) // reports it
		return 0
	}
	if n < 0 || n > 3 {
		r.fail(v, "log level outside 0-3 (0 errors, 1 warnings, 2 info, 3 debug)")
		return 0
	}
	return n
}

// portKeys reads portno_start and portno_end. Moving portno_start in the
// file without portno_end keeps the range's width from the default text.
func (r *resolver) portKeys(rs *roleState) {
	rs.startV, rs.endV = rs.get(r, "portno_start"), rs.get(r, "portno_end")
	switch {
	case !rs.startV.set && !rs.endV.set:
		return // assigned later
	case !rs.startV.set:
		rs.startV = rs.endV
	}
	rs.portsSet, rs.portsOK = true, true
	start, ok1 := r.integer(rs.startV, 0, 65535)
	rs.PortStart, rs.PortEnd = start, start
	if !ok1 {
		rs.portsOK = false
		return
	}
	if !rs.endV.set {
		rs.endV = rs.startV
		return
	}
	if rs.startV.line > 0 && rs.endV.line == 0 {
		// Start moved by the file, end from the default text.
		if ds, ok := rs.ds.get("portno_start"); ok {
			if d0, err := strconv.Atoi(ds.value); err == nil {
				if d1, err := strconv.Atoi(rs.endV.value); err == nil && d1 >= d0 {
					rs.PortEnd = start + d1 - d0
					rs.endV = rs.startV
					return
				}
			}
		}
	}
	end, ok2 := r.integer(rs.endV, 0, 65535)
	rs.PortEnd = end
	rs.portsOK = ok2
}

// checkPorts checks the given port ranges against the segment and each
// other.
func (r *resolver) checkPorts(x *XSEG, xv map[string]val, states []*roleState) {
	xsegbd := portRange{x.XsegbdStart, x.XsegbdEnd, fmt.Sprintf("the block-endpoint ports XSEGBD_START..XSEGBD_END = %d..%d", x.XsegbdStart, x.XsegbdEnd)}
	vtool := portRange{x.VtoolStart, x.VtoolEnd, fmt.Sprintf("the vlmc ports VTOOL_START..VTOOL_END = %d..%d", x.VtoolStart, x.VtoolEnd)}
	var seen []*roleState
	for _, rs := range states {
		if !rs.portsSet || !rs.portsOK {
			continue
		}
		rs.portsOK = false
		sv, ev := rs.startV, rs.endV
		p := portRange{rs.PortStart, rs.PortEnd, ""}
		switch {
		case p.end < p.start:
			r.fail(ev, "below portno_start = %d", p.start)
			continue
		case p.start >= x.Ports:
			r.fail(sv, "outside the segment's %d ports", x.Ports)
			continue
		case p.end >= x.Ports:
			r.fail(ev, "port %d outside the segment's %d ports", p.end, x.Ports)
			continue
		case p.start >= x.DynPorts:
			r.fail(sv, "at or above SEGMENT_DYNPORTS = %d: ports from there are dynamic, for the tools", x.DynPorts)
			continue
		case p.end >= x.DynPorts:
			r.fail(ev, "port %d at or above SEGMENT_DYNPORTS = %d: ports from there are dynamic, for the tools", p.end, x.DynPorts)
			continue
		}
		ports := fmt.Sprintf("ports %d..%d", p.start, p.end)
		if rs.Type == TypeNBDEndpoint {
			if p.start < xsegbd.start || p.end > xsegbd.end {
				r.fail(sv, "%s outside %s, where block endpoints bind", ports, xsegbd.what)
				continue
			}
		} else if p.overlaps(xsegbd) {
			r.fail(sv, "%s overlap %s", ports, xsegbd.what)
			continue
		}
		if p.overlaps(vtool) {
			r.fail(sv, "%s overlap %s", ports, vtool.what)
			continue
		}
		clash := false
		for _, o := range seen {
			if p.overlaps(portRange{o.PortStart, o.PortEnd, ""}) {
				r.fail(sv, "%s overlap [%s] ports %d..%d", ports, o.Name, o.PortStart, o.PortEnd)
				clash = true
				break
			}
		}
		if clash {
			continue
		}
		rs.portsOK = true
		seen = append(seen, rs)
	}
}

// assignPorts gives each role without ports one free port: block
// endpoints the first free one of XSEGBD, others the first free static
// one after the highest port of the other peers (wrapping around).
func (r *resolver) assignPorts(x *XSEG, states []*roleState) {
	taken := make([]bool, x.DynPorts)
	mark := func(a, b int) {
		for p := max(a, 0); p <= b && p < len(taken); p++ {
			taken[p] = true
		}
	}
	mark(x.XsegbdStart, x.XsegbdEnd)
	mark(x.VtoolStart, x.VtoolEnd)
	after := x.XsegbdEnd + 1
	for _, rs := range states {
		if rs.portsSet {
			mark(rs.PortStart, rs.PortEnd)
			if rs.portsOK && rs.Type != TypeNBDEndpoint {
				after = max(after, rs.PortEnd+1)
			}
		}
	}
	// Ports of block endpoints were marked with XSEGBD; track them apart.
	endpoint := make([]bool, x.XsegbdEnd-x.XsegbdStart+1)
	for _, rs := range states {
		if rs.portsSet && rs.Type == TypeNBDEndpoint {
			for p := rs.PortStart; p <= rs.PortEnd; p++ {
				if i := p - x.XsegbdStart; i >= 0 && i < len(endpoint) {
					endpoint[i] = true
				}
			}
		}
	}
	for _, rs := range states {
		if rs.portsSet {
			continue
		}
		port := -1
		if rs.Type == TypeNBDEndpoint {
			if i := slices.Index(endpoint, false); i >= 0 {
				endpoint[i] = true
				port = x.XsegbdStart + i
			}
		} else {
			for k := range len(taken) {
				if p := (after + k) % len(taken); !taken[p] {
					taken[p] = true
					port = p
					break
				}
			}
		}
		v := val{sec: rs.Name, key: "portno_start"}
		if rs.fs != nil {
			v.secLine = rs.fs.line
		}
		if port < 0 && rs.Type == TypeNBDEndpoint {
			r.fail(v, "no free port left in XSEGBD_START..XSEGBD_END = %d..%d for this block endpoint: widen it, or narrow the other endpoints", x.XsegbdStart, x.XsegbdEnd)
		} else if port < 0 {
			r.fail(v, "no free static port left for this role: set portno_start")
			rs.portsOK = false
			continue
		}
		rs.PortStart, rs.PortEnd, rs.portsOK = port, port, true
	}
}

// refSpec says what a *_port key of a type points at: a role of one of
// types, preferably the one called name, else the nth (0-based) of them.
type refSpec struct {
	key   string
	types []string
	name  string
	nth   int
	dst   func(*Role) *int
}

var refs = map[string][]refSpec{
	TypeMapperd: {
		{"blockerb_port", []string{TypeFileBlocker, TypeRadosBlocker}, "blockerb", 0, func(r *Role) *int { return &r.BlockerBPort }},
		{"blockerm_port", []string{TypeFileBlocker, TypeRadosBlocker}, "blockerm", 1, func(r *Role) *int { return &r.BlockerMPort }},
	},
	TypeVlmcd: {
		{"blocker_port", []string{TypeFileBlocker, TypeRadosBlocker}, "blockerb", 0, func(r *Role) *int { return &r.BlockerPort }},
		{"mapper_port", []string{TypeMapperd}, "mapperd", 0, func(r *Role) *int { return &r.MapperPort }},
	},
	TypeNBDEndpoint: {
		{"vlmcd_port", []string{TypeVlmcd}, "vlmcd", 0, func(r *Role) *int { return &r.VlmcdPort }},
		{"mapper_port", []string{TypeMapperd}, "mapperd", 0, func(r *Role) *int { return &r.MapperPort }},
	},
}

// resolveRefs fills in and checks the ports by which peers reach others.
func (r *resolver) resolveRefs(states []*roleState) {
	for _, rs := range states {
		for _, ref := range refs[rs.Type] {
			var cands []*roleState
			for _, o := range states {
				if slices.Contains(ref.types, o.Type) {
					cands = append(cands, o)
				}
			}
			kind := strings.Join(ref.types, " or ")
			v := rs.get(r, ref.key)
			if !v.set {
				var target *roleState
				if i := slices.IndexFunc(cands, func(o *roleState) bool { return o.Name == ref.name }); i >= 0 {
					target = cands[i]
				} else if len(cands) > 0 {
					target = cands[min(ref.nth, len(cands)-1)]
				}
				if target == nil {
					r.fail(v, "no role of type %s to point at", kind)
					continue
				}
				if target.portsOK {
					*ref.dst(&rs.Role) = target.PortStart
				}
				continue
			}
			port, ok := r.integer(v, 0, 65535)
			if !ok {
				continue
			}
			*ref.dst(&rs.Role) = port
			found, unsure := false, false
			for _, o := range cands {
				unsure = unsure || !o.portsOK
				found = found || o.portsOK && o.Contains(port)
			}
			if found || unsure {
				continue
			}
			var owner *roleState
			for _, o := range states {
				if o.portsOK && o.Contains(port) {
					owner = o
				}
			}
			if owner != nil {
				r.fail(v, "port %d is [%s], a %s, not a %s", port, owner.Name, owner.Type, kind)
			} else {
				r.fail(v, "port %d is not a port of any role (want a %s)", port, kind)
			}
		}
	}
}

// checkUnique checks that endpoints do not share a socket or address.
// The blame goes to a value set in the file rather than a derived one.
func (r *resolver) checkUnique(states []*roleState) {
	for _, key := range []string{"socket", "listen"} {
		first := map[string]*roleState{}
		for _, rs := range states {
			if rs.Type != TypeNBDEndpoint {
				continue
			}
			s := rs.Socket
			if key == "listen" {
				s = rs.Listen
			}
			o, ok := first[s]
			if !ok || s == "" {
				first[s] = rs
				continue
			}
			blame, other := rs, o
			if v := rs.get(r, key); v.line == 0 && o.get(r, key).line > 0 {
				blame, other = o, rs
			}
			v := blame.get(r, key)
			if !v.set {
				v.value, v.set = s, true
			}
			what := key
			if key == "listen" {
				what = "listen address"
			}
			r.fail(v, "also the %s of [%s]", what, other.Name)
		}
	}
}

// checkMetricsAddrs checks that no metrics_listen is the metrics_listen of
// another role or the listen address of a block endpoint. The blame goes
// to the metrics_listen found later in ORDER.
func (r *resolver) checkMetricsAddrs(states []*roleState) {
	type owner struct{ role, key string }
	seen := map[string]owner{}
	for _, rs := range states {
		if rs.Listen != "" {
			seen[rs.Listen] = owner{rs.Name, "listen address"}
		}
	}
	for _, rs := range states {
		if rs.MetricsListen == "" {
			continue
		}
		if o, ok := seen[rs.MetricsListen]; ok {
			r.fail(rs.get(r, "metrics_listen"), "also the %s of [%s]", o.key, o.role)
			continue
		}
		seen[rs.MetricsListen] = owner{rs.Name, "metrics_listen"}
	}
}

// checkSize applies a rough rule to SEGMENT_SIZE, after the layout of the
// xseg package: the pool holds one request per 64 KiB of segment (256 to
// 65536, a power of two); each port has two rings of pool size, 4 bytes a
// slot. The rings, ports and pool must leave at least half the segment
// for the buffer heap, and the pool must hold the requests all roles may
// have in flight at once.
func (r *resolver) checkSize(x *XSEG, xv map[string]val, states []*roleState) {
	size := uint64(x.SizeMiB) << 20
	nreqs := min(max(size>>16, 256), 65536)
	nreqs = 1 << bits.Len64(nreqs-1)
	overhead := 4096 + uint64(x.Ports)*256 + uint64(x.Ports)*2*nreqs*4 + nreqs*512
	v := xv["SEGMENT_SIZE"]
	if overhead > size/2 {
		r.fail(v, "too small for %d ports: their rings and the pool of %d requests take %d MiB, more than half of it (fewer SEGMENT_PORTS, or a larger size)",
			x.Ports, nreqs, (overhead+1<<20-1)>>20)
		return
	}
	inflight := 0
	for _, rs := range states {
		inflight += rs.NrOps
	}
	if uint64(inflight) > nreqs {
		r.fail(v, "its pool of %d requests is smaller than the %d the roles may have in flight (the sum of their nr_ops)", nreqs, inflight)
	}
}
