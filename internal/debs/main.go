// Command debs writes the Debian packages archipelago, archipelago-rados and
// archipelago-ganeti with nfpm, from programs and generated files that
// scripts/build-debs.sh prepared (it builds the programs, the default
// configuration, the man pages and the bash completions, then runs this).
//
// It is a module of its own so that nfpm and the ~80 modules it brings
// (go-git, openpgp, sprig, ...) stay out of the module graph of the
// project's library and programs.
//
//	go run . -root REPO -version V -bin DIR -gen DIR -out OUTDIR -shlibs-archipelago-rados 'libc6 (>= 2.34), librados2 (>= 14.2.0)' ...
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
)

// The programs of the archipelago package, in /usr/bin.
var programs = []string{"archipelago", "vlmc", "xseg", "filed", "mapperd", "vlmcd", "nbdd", "nulld", "archipelagod"}

// The actions Ganeti calls, each a symlink to the provider binary.
var ganetiActions = []string{"create", "attach", "detach", "remove", "grow", "setinfo", "verify", "snapshot", "open", "close"}

const (
	homepage     = "https://github.com/archipelago-go/archipelago"
	extstorage   = "/usr/lib/archipelago/archipelago-extstorage"
	providerDir  = "/usr/share/ganeti/extstorage/archipelago"
	unitDir      = "/lib/systemd/system"
	defaultMaint = "Archipelago-Go maintainers <maintainers@users.noreply.r-seed-13206e71.example>"
)

type builder struct {
	root, version, bin, gen, out, maint string
	params                              string // the provider's parameters.list
	compression                         string
	shlibs                              map[string][]string // package → Depends from dpkg-shlibdeps
	commit, subject                     string
	when                                time.Time
	tmp                                 string
}

func main() {
	var b builder
	shl := map[string]*string{"archipelago": new(string), "archipelago-rados": new(string), "archipelago-ganeti": new(string)}
	flag.StringVar(&b.root, "root", "", "repository root")
	flag.StringVar(&b.version, "version", "", "Debian version of every package")
	flag.StringVar(&b.bin, "bin", "", "directory holding the built programs")
	flag.StringVar(&b.gen, "gen", "", "directory holding archipelago.conf, man/*.1 and completion/*")
	flag.StringVar(&b.out, "out", "", "directory the .deb files go to")
	flag.StringVar(&b.params, "ganeti-params", "", "the provider's parameters.list (default ROOT/packaging/ganeti/parameters.list)")
	flag.StringVar(&b.compression, "compression", "xz", "data.tar compression: xz (smallest), gzip (fastest) or zstd")
	flag.StringVar(&b.maint, "maintainer", defaultMaint, "Maintainer field")
	for pkg, v := range shl {
		flag.StringVar(v, "shlibs-"+pkg, "", "Depends of "+pkg+" on shared libraries (dpkg-shlibdeps of its programs), comma-separated")
	}
	flag.Parse()
	for name, v := range map[string]string{"root": b.root, "version": b.version, "bin": b.bin, "gen": b.gen, "out": b.out} {
		if v == "" {
			fmt.Fprintf(os.Stderr, "debs: -%s is required\n", name)
			os.Exit(2)
		}
	}
	b.shlibs = map[string][]string{}
	for pkg, v := range shl {
		for _, d := range strings.Split(*v, ",") {
			if d = strings.TrimSpace(d); d != "" {
				b.shlibs[pkg] = append(b.shlibs[pkg], d)
			}
		}
	}
	if err := b.run(); err != nil {
		fmt.Fprintln(os.Stderr, "debs:", err)
		os.Exit(1)
	}
}

func (b *builder) run() error {
	var err error
	if b.tmp, err = os.MkdirTemp("", "debs-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.tmp)
	out, err := b.git("log", "-1", "--format=%H%n%ct%n%s")
	if err != nil {
		return err
	}
	lines := strings.SplitN(strings.TrimSpace(out), "\n", 3)
	if len(lines) != 3 {
		return fmt.Errorf("git log -1 in %s printed %q", b.root, out)
	}
	b.commit, b.subject = lines[0], lines[2]
	var secs int64
	if _, err := fmt.Sscan(lines[1], &secs); err != nil {
		return fmt.Errorf("git log -1: commit time %q: %w", lines[1], err)
	}
	b.when = time.Unix(secs, 0).UTC()

	pkgs := []func() (*nfpm.Info, error){b.archipelago, b.rados, b.ganeti}
	for _, mk := range pkgs {
		info, err := mk()
		if err != nil {
			return err
		}
		if err := b.write(info); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) git(args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-C", b.root}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// base fills what every package shares.
func (b *builder) base(name, arch, short, long string) *nfpm.Info {
	return &nfpm.Info{
		Name:          name,
		Arch:          arch,
		Platform:      "linux",
		Version:       b.version,
		VersionSchema: "none", // the version is already a Debian one
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    b.maint,
		Homepage:      homepage,
		Description:   short + "\n" + long,
		MTime:         b.when,
		Overridables: nfpm.Overridables{
			Umask: 0o022,
			Deb:   nfpm.Deb{Compression: b.compression},
		},
	}
}

func (b *builder) archipelago() (*nfpm.Info, error) {
	info := b.base("archipelago", "amd64",
		"thin, snapshottable, clonable block volumes over files or RADOS",
		`Archipelago stores virtual machine disks as thin volumes made of objects,
with copy-on-write snapshots and clones. Its peers (filed, mapperd, vlmcd,
nbdd) talk through a shared-memory XSEG segment, each in its own process or
several in one (archipelagod); vlmc creates, snapshots, clones and maps
volumes (loop device or NBD URI for QEMU).
.
This package holds every program and the tools, the commented default
configuration /etc/archipelago/archipelago.conf, the systemd units (not
enabled: nothing starts until an operator runs archipelago start or enables
archipelago.service) and a logrotate file. The RADOS blocker is in
archipelago-rados, the Ganeti ExtStorage provider in archipelago-ganeti.`)
	info.Depends = append([]string{"mount"}, b.shlibs[info.Name]...) // mount: losetup, for vlmc map
	info.Suggests = []string{"archipelago-rados", "archipelago-ganeti", "qemu-utils", "fuse3"}

	c := files.Contents{}
	for _, p := range programs {
		c = append(c, b.file(filepath.Join(b.bin, p), "/usr/bin/"+p, 0o755))
	}
	c = append(c,
		b.config(filepath.Join(b.gen, "archipelago.conf"), "/etc/archipelago/archipelago.conf"),
		b.config(filepath.Join(b.root, "packaging/logrotate/archipelago"), "/etc/logrotate.d/archipelago"),
	)
	if vm := filepath.Join(b.root, "packaging/vlmcmap"); exists(vm) {
		c = append(c, b.config(vm, "/etc/archipelago/vlmcmap"))
	}
	units, err := filepath.Glob(filepath.Join(b.root, "packaging/systemd/*.service"))
	if err != nil {
		return nil, err
	}
	var unitNames []string
	for _, u := range units {
		unitNames = append(unitNames, filepath.Base(u))
		c = append(c, b.file(u, unitDir+"/"+filepath.Base(u), 0o644))
	}
	sort.Strings(unitNames) // archipelago-map.service stops before archipelago.service
	for _, p := range programs {
		man, err := b.gzipped(filepath.Join(b.gen, "man", p+".1"))
		if err != nil {
			return nil, err
		}
		c = append(c, b.file(man, "/usr/share/man/man1/"+p+".1.gz", 0o644))
		if comp := filepath.Join(b.gen, "completion", p); exists(comp) {
			c = append(c, b.file(comp, "/usr/share/bash-completion/completions/"+p, 0o644))
		}
	}
	doc, err := b.docs(info.Name, "", "./cmd/...")
	if err != nil {
		return nil, err
	}
	info.Contents = append(c, doc...)
	if err := b.scripts(info, map[string]string{"#UNITS#": strings.Join(unitNames, " ")}); err != nil {
		return nil, err
	}
	return info, nil
}

func (b *builder) rados() (*nfpm.Info, error) {
	info := b.base("archipelago-rados", "amd64",
		"Archipelago RADOS blocker (Ceph storage for Archipelago volumes)",
		`radosd serves Archipelago's data and map objects from a Ceph RADOS pool,
with persistent locks, instead of files. Select it with a rados_blocker role
in /etc/archipelago/archipelago.conf. The host process that runs it with
other roles (archipelagod, for [PEERS] HOSTED) is here too.`)
	info.Depends = append([]string{fmt.Sprintf("archipelago (= %s)", b.version)}, b.shlibs[info.Name]...)
	man, err := b.gzipped(filepath.Join(b.gen, "man", "radosd.1"))
	if err != nil {
		return nil, err
	}
	c := files.Contents{
		b.file(filepath.Join(b.bin, "radosd"), "/usr/bin/radosd", 0o755),
		// archipelagod of the package archipelago runs it in its place
		// for a rados_blocker role (cmd/archipelagod, cephHost).
		b.file(filepath.Join(b.bin, "rados", "archipelagod"), "/usr/lib/archipelago/rados/archipelagod", 0o755),
		b.file(man, "/usr/share/man/man1/radosd.1.gz", 0o644),
	}
	doc, err := b.docs(info.Name, "ceph", "./cmd/radosd")
	if err != nil {
		return nil, err
	}
	info.Contents = append(c, doc...)
	return info, nil
}

func (b *builder) ganeti() (*nfpm.Info, error) {
	// amd64, not all: the provider is a compiled Go program.
	info := b.base("archipelago-ganeti", "amd64",
		"Ganeti ExtStorage provider for Archipelago volumes",
		`Lets Ganeti create, attach, grow, snapshot and live-migrate instance disks
that are Archipelago volumes (disk template ext, provider archipelago; the
disk parameter origin clones a snapshot). The provider is installed in
/usr/share/ganeti/extstorage/archipelago.`)
	info.Depends = append([]string{fmt.Sprintf("archipelago (= %s)", b.version)}, b.shlibs[info.Name]...)
	info.Deb.Fields = map[string]string{"Enhances": "ganeti"}

	bin := filepath.Join(b.bin, "archipelago-extstorage")
	if !exists(bin) {
		return nil, fmt.Errorf("%s: missing (is cmd/archipelago-extstorage built?)", bin)
	}
	c := files.Contents{b.file(bin, extstorage, 0o755)}
	for _, a := range ganetiActions {
		// Relative, as policy wants for links inside /usr.
		c = append(c, &files.Content{Source: "../../../../lib/archipelago/archipelago-extstorage", Destination: providerDir + "/" + a, Type: files.TypeSymlink})
	}
	params := b.params
	if params == "" {
		params = filepath.Join(b.root, "packaging/ganeti/parameters.list")
	}
	if !exists(params) {
		return nil, fmt.Errorf("%s: missing", params)
	}
	c = append(c, b.file(params, providerDir+"/parameters.list", 0o644))
	doc, err := b.docs(info.Name, "", "./cmd/archipelago-extstorage")
	if err != nil {
		return nil, err
	}
	info.Contents = append(c, doc...)
	if err := b.scripts(info, nil); err != nil {
		return nil, err
	}
	return info, nil
}

// scripts reads packaging/deb/<pkg>.{postinst,prerm,postrm} where present,
// replacing the placeholders, and sets them as the maintainer scripts.
func (b *builder) scripts(info *nfpm.Info, subst map[string]string) error {
	for _, s := range []struct {
		ext string
		dst *string
	}{{"preinst", &info.Scripts.PreInstall}, {"postinst", &info.Scripts.PostInstall}, {"prerm", &info.Scripts.PreRemove}, {"postrm", &info.Scripts.PostRemove}} {
		src := filepath.Join(b.root, "packaging/deb", info.Name+"."+s.ext)
		text, err := os.ReadFile(src)
		if os.IsNotExist(err) {
			continue
		} else if err != nil {
			return err
		}
		t := string(text)
		for k, v := range subst {
			t = strings.ReplaceAll(t, k, v)
		}
		if strings.Contains(t, "#UNITS#") {
			return fmt.Errorf("%s: #UNITS# left unreplaced", src)
		}
		dst := filepath.Join(b.tmp, info.Name+"."+s.ext)
		if err := os.WriteFile(dst, []byte(t), 0o755); err != nil {
			return err
		}
		*s.dst = dst
	}
	return nil
}

// docs gives /usr/share/doc/<pkg>/{copyright,changelog.gz}.
func (b *builder) docs(pkg, tags string, patterns ...string) (files.Contents, error) {
	dir := filepath.Join(b.tmp, pkg)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cp, err := b.copyright(pkg, tags, patterns)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "copyright"), cp, 0o644); err != nil {
		return nil, err
	}
	// A native package (the version has no Debian revision): changelog.gz.
	cl := fmt.Sprintf("%s (%s) unstable; urgency=medium\n\n  * Built from git commit %s:\n%s\n -- %s  %s\n",
		pkg, b.version, b.commit, wrap(b.subject, "    ", 78), b.maint, b.when.Format(time.RFC1123Z))
	clPath := filepath.Join(dir, "changelog")
	if err := os.WriteFile(clPath, []byte(cl), 0o644); err != nil {
		return nil, err
	}
	gz, err := b.gzipped(clPath)
	if err != nil {
		return nil, err
	}
	return files.Contents{
		b.file(filepath.Join(dir, "copyright"), "/usr/share/doc/"+pkg+"/copyright", 0o644),
		b.file(gz, "/usr/share/doc/"+pkg+"/changelog.gz", 0o644),
	}, nil
}

// copyright states the project's terms and those of every Go module (and
// the Go standard library) compiled into the package's programs.
func (b *builder) copyright(pkg, tags string, patterns []string) ([]byte, error) {
	args := []string{"list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}"}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command("go", append(args, patterns...)...)
	cmd.Dir = b.root
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	mods := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			mods[l] = true
		}
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOROOT: %w", err)
	}
	mods["Go standard library (runtime, net, crypto, ...) "+runtimeVersion()+" "+strings.TrimSpace(string(goroot))] = true
	var list []string
	for m := range mods {
		list = append(list, m)
	}
	sort.Strings(list)

	var w bytes.Buffer
	fmt.Fprintf(&w, "%s: Archipelago in Go (%s)\nBuilt from git commit %s.\n\n", pkg, homepage, b.commit)
	fmt.Fprintf(&w, "Copyright %d the Archipelago-Go authors.\n", b.when.Year())
	w.WriteString(`The project's own code carries no license statement yet; until it does,
its authors reserve all rights to it.

The programs are statically linked with the following Go modules; each
one's copyright and license follow.
`)
	for _, m := range list {
		i := strings.LastIndex(m, " ")
		name, dir := m[:i], m[i+1:]
		text, err := licenseText(dir)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		fmt.Fprintf(&w, "\n%s:\n\n", name)
		if strings.Contains(text, "Apache License") && strings.Contains(text, "Version 2.0") {
			text = "Licensed under the Apache License, Version 2.0; on Debian systems its text\nis in /usr/share/common-licenses/Apache-2.0.\n"
		}
		for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
			l = strings.TrimRight(l, " \t")
			if l == "" {
				w.WriteString("\n")
			} else {
				w.WriteString("    " + l + "\n")
			}
		}
	}
	return w.Bytes(), nil
}

func runtimeVersion() string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func licenseText(dir string) (string, error) {
	for _, n := range []string{"LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING", "LICENCE"} {
		if text, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
			return string(text), nil
		}
	}
	return "", fmt.Errorf("no LICENSE file in %s", dir)
}

func (b *builder) file(src, dst string, mode os.FileMode) *files.Content {
	return &files.Content{Source: src, Destination: dst, Type: files.TypeFile,
		FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode}}
}

func (b *builder) config(src, dst string) *files.Content {
	return &files.Content{Source: src, Destination: dst, Type: files.TypeConfig,
		FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: 0o644}}
}

// gzipped writes src.gz (maximum compression, no name or time in the
// header, as lintian wants) into the temporary directory.
func (b *builder) gzipped(src string) (string, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(b.tmp, "gz", strings.TrimPrefix(src, "/")+".gz")
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	z, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return "", err
	}
	if _, err := z.Write(data); err != nil {
		return "", err
	}
	if err := z.Close(); err != nil {
		return "", err
	}
	return dst, os.WriteFile(dst, buf.Bytes(), 0o644)
}

func (b *builder) write(info *nfpm.Info) error {
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return fmt.Errorf("%s: %w", info.Name, err)
	}
	pkgr, err := nfpm.Get("deb")
	if err != nil {
		return err
	}
	name := filepath.Join(b.out, fmt.Sprintf("%s_%s_%s.deb", info.Name, b.version, info.Arch))
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := pkgr.Package(info, f); err != nil {
		f.Close()
		os.Remove(name)
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Println(name)
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// wrap breaks text into lines of at most width columns, each with indent.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, w := range strings.Fields(text) {
		if line != indent && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += w
	}
	b.WriteString(line + "\n")
	return b.String()
}
