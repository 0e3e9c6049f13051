package packaging

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// licenseSPDX is knockwall's license, as every package declares it.
const licenseSPDX = "Apache-2.0"

// TestLicense: the source tree carries the Apache License 2.0 in LICENSE,
// and both packages declare it by its SPDX identifier: the .deb's
// copyright file for knockwall's own files, nfpm's license field and
// OpenWrt's PKG_LICENSE, with LICENSE as OpenWrt's license file.
func TestLicense(t *testing.T) {
	text := string(readFile(t, filepath.Join(repoRoot, "LICENSE")))
	for _, want := range []string{
		"Apache License\n                           Version 2.0, January 2004\n",
		"TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
		"END OF TERMS AND CONDITIONS",
		"APPENDIX: How to apply the Apache License to your work.",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("LICENSE is not the Apache License 2.0: it lacks %q", want)
		}
	}

	// The copyright file's paragraph for knockwall's own files, and the
	// stand-alone license paragraph it refers to.
	copyright := string(readFile(t, "copyright"))
	own := regexp.MustCompile(`(?m)^Files: \*\n(?:[A-Z][^\n]*\n(?: [^\n]*\n)*)*?License: (\S+)\n`).FindStringSubmatch(copyright)
	if own == nil {
		t.Error("packaging/copyright has no Files: * paragraph with a License: line")
	} else if own[1] != licenseSPDX {
		t.Errorf("packaging/copyright: knockwall's own files are under %q, want %q", own[1], licenseSPDX)
	}
	if !regexp.MustCompile(`(?m)^License: ` + licenseSPDX + `\n(?: [^\n]*\n)*? [^\n]*/usr/share/common-licenses/` + licenseSPDX).MatchString(copyright) {
		t.Errorf("packaging/copyright has no stand-alone %s paragraph pointing at /usr/share/common-licenses", licenseSPDX)
	}

	if !regexp.MustCompile(`(?m)^license: ` + licenseSPDX + `$`).Match(readFile(t, "nfpm.yaml")) {
		t.Errorf("packaging/nfpm.yaml has no license: %s", licenseSPDX)
	}

	mk := string(readFile(t, filepath.Join(openwrtDir, "Makefile")))
	for _, want := range []string{"PKG_LICENSE:=" + licenseSPDX, "PKG_LICENSE_FILES:=LICENSE"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(mk) {
			t.Errorf("openwrt Makefile lacks %q", want)
		}
	}
}
