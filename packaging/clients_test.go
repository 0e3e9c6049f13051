package packaging

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// clientTargets are the client archives make dist builds (OS-ARCH), or
// those DIST_CLIENTS names, as packaging/dist.sh reads it.
func clientTargets() []string {
	if v, ok := os.LookupEnv("DIST_CLIENTS"); ok {
		return strings.Fields(v)
	}
	return []string{"darwin-amd64", "darwin-arm64", "freebsd-amd64", "freebsd-arm64", "windows-amd64", "windows-arm64"}
}

// archiveFiles reads a client archive: each file's mode and content, by
// its name inside the archive.
func archiveFiles(t *testing.T, path string) map[string]member {
	t.Helper()
	out := map[string]member{}
	if strings.HasSuffix(path, ".zip") {
		z, err := zip.OpenReader(path)
		if err != nil {
			t.Fatal(err)
		}
		defer z.Close()
		for _, f := range z.File {
			r, err := f.Open()
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(r)
			r.Close()
			if err != nil {
				t.Fatal(err)
			}
			out[f.Name] = member{mode: int64(f.Mode().Perm()), body: body}
		}
		return out
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = member{mode: h.Mode & 0o7777, uid: h.Uid, gid: h.Gid, typeflag: h.Typeflag, body: body}
	}
}

// TestClientArchives: each client archive is listed in SHA256SUMS and
// holds, in a directory of its own name, the static knockwall binary of
// its OS and architecture (checked in the binary's own format: Mach-O, PE,
// FreeBSD ELF), executable, owned by root, stamped with the release's
// version, and the README.
func TestClientArchives(t *testing.T) {
	dist := distDir(t)
	version := strings.TrimPrefix(stampedVersion(t, dist), "v")
	sums := string(readFile(t, filepath.Join(dist, "SHA256SUMS")))
	for _, c := range clientTargets() {
		t.Run(c, func(t *testing.T) {
			goos, goarch, _ := strings.Cut(c, "-")
			name := "knockwall_" + version + "_" + goos + "_" + goarch
			archive, exe := name+".tar.gz", "knockwall"
			if goos == "windows" {
				archive, exe = name+".zip", "knockwall.exe"
			}
			if !listed(sums, archive) {
				t.Errorf("SHA256SUMS does not list %s", archive)
			}
			files := archiveFiles(t, filepath.Join(dist, archive))
			bin, ok := files[name+"/"+exe]
			if !ok {
				t.Fatalf("%s has no %s/%s: %v", archive, name, exe, keys(files))
			}
			if _, ok := files[name+"/README.md"]; !ok {
				t.Errorf("%s has no README.md", archive)
			}
			if bin.mode != 0o755 || bin.uid != 0 || bin.gid != 0 {
				t.Errorf("%s: mode %04o, owner %d:%d; want 0755 root", exe, bin.mode, bin.uid, bin.gid)
			}
			checkFormat(t, goos, goarch, bin.body)
			bi, err := buildinfo.Read(bytes.NewReader(bin.body))
			if err != nil {
				t.Fatal(err)
			}
			settings := map[string]string{}
			for _, s := range bi.Settings {
				settings[s.Key] = s.Value
			}
			for k, want := range map[string]string{"CGO_ENABLED": "0", "GOOS": goos, "GOARCH": goarch, "-trimpath": "true"} {
				if settings[k] != want {
					t.Errorf("build setting %s=%q, want %q", k, settings[k], want)
				}
			}
			if !bytes.Contains(bin.body, []byte(version)) {
				t.Errorf("the binary does not hold the version %s (-X main.version)", version)
			}
		})
	}
}

// checkFormat checks that b is an executable of goos and goarch, in that
// system's own format.
func checkFormat(t *testing.T, goos, goarch string, b []byte) {
	t.Helper()
	r := bytes.NewReader(b)
	switch goos {
	case "darwin":
		f, err := macho.NewFile(r)
		if err != nil {
			t.Fatalf("not Mach-O: %v", err)
		}
		want := map[string]macho.Cpu{"amd64": macho.CpuAmd64, "arm64": macho.CpuArm64}[goarch]
		if f.Cpu != want || f.Type != macho.TypeExec {
			t.Errorf("Mach-O cpu %v type %v, want %v executable", f.Cpu, f.Type, want)
		}
	case "windows":
		f, err := pe.NewFile(r)
		if err != nil {
			t.Fatalf("not PE: %v", err)
		}
		want := map[string]uint16{"amd64": pe.IMAGE_FILE_MACHINE_AMD64, "arm64": pe.IMAGE_FILE_MACHINE_ARM64}[goarch]
		if f.Machine != want || f.Characteristics&pe.IMAGE_FILE_EXECUTABLE_IMAGE == 0 {
			t.Errorf("PE machine %#x characteristics %#x, want %#x executable", f.Machine, f.Characteristics, want)
		}
	case "freebsd":
		f, err := elf.NewFile(r)
		if err != nil {
			t.Fatalf("not ELF: %v", err)
		}
		want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[goarch]
		if f.OSABI != elf.ELFOSABI_FREEBSD || f.Machine != want || f.Type != elf.ET_EXEC {
			t.Errorf("ELF %v %v %v, want FreeBSD %v executable", f.OSABI, f.Machine, f.Type, want)
		}
	default:
		t.Fatalf("no format check for %s", goos)
	}
}

// listed reports whether sums (sha256sum output) has a line for name.
func listed(sums, name string) bool {
	sc := bufio.NewScanner(strings.NewReader(sums))
	for sc.Scan() {
		if _, n, ok := strings.Cut(sc.Text(), "  "); ok && n == name {
			return true
		}
	}
	return false
}

func keys(m map[string]member) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
