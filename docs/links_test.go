// Package docs holds knockwall's documentation; its test checks that every
// relative link in the documents points at a file that exists and, when it
// names an anchor, at a heading that exists, as GitHub renders them.
package docs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// maxREADMELines keeps the README a page a newcomer reads; reference
// material goes to docs/.
const maxREADMELines = 250

// documents are the Markdown files whose links are checked, relative to
// the repository root.
func documents(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"../README.md", "../SECURITY.md", "../CHANGELOG.md", "../bench/RESULTS.md", "../packaging/README.md"}, docs...)
}

var (
	// inlineLink matches [text](target) and ![alt](target); the target
	// ends at the first space (a title may follow) or closing parenthesis.
	inlineLink = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	// refLink matches a reference definition: [name]: target
	refLink = regexp.MustCompile(`^\s*\[[^\]]+\]:\s+(\S+)`)
	// codeSpan matches inline code, whose brackets are no links.
	codeSpan = regexp.MustCompile("`[^`]*`")
	// headingLink matches a link inside a heading, whose text is rendered.
	headingLink = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
)

// link is one link target found in a document.
type link struct {
	line   int
	target string
}

// scan returns the document's headings' anchors and its link targets,
// leaving out fenced code blocks and code spans.
func scan(path string) (anchors map[string]bool, links []link, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	anchors = map[string]bool{}
	seen := map[string]int{}
	fenced := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		if h, ok := heading(line); ok {
			a := slug(h)
			if k := seen[a]; k > 0 {
				anchors[fmt.Sprintf("%s-%d", a, k)] = true
			} else {
				anchors[a] = true
			}
			seen[a]++
		}
		text := codeSpan.ReplaceAllString(line, "")
		for _, m := range inlineLink.FindAllStringSubmatch(text, -1) {
			links = append(links, link{n, m[1]})
		}
		if m := refLink.FindStringSubmatch(text); m != nil {
			links = append(links, link{n, m[1]})
		}
	}
	return anchors, links, sc.Err()
}

// heading returns the text of an ATX heading line.
func heading(line string) (string, bool) {
	if !strings.HasPrefix(line, "#") {
		return "", false
	}
	rest := strings.TrimLeft(line, "#")
	if len(line)-len(rest) > 6 || (rest != "" && rest[0] != ' ') {
		return "", false
	}
	return strings.TrimSpace(rest), true
}

// slug is GitHub's anchor for a heading: the rendered text in lower case,
// with everything but letters, digits, spaces, hyphens and underscores
// removed and spaces turned into hyphens.
func slug(h string) string {
	// Rendered text: a link's text stays, its target goes.
	h = headingLink.ReplaceAllString(h, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestSlug(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"Try it (two commands)", "try-it-two-commands"},
		{"A router (`forward: true` services)", "a-router-forward-true-services"},
		{"Binary size: HTTP and metrics without net/http and client_golang", "binary-size-http-and-metrics-without-nethttp-and-client_golang"},
		{"fwknop's packets, side by side", "fwknops-packets-side-by-side"},
		{"Start: exec to \"ready\"", "start-exec-to-ready"},
		{"Knocks — and [links](x.md)", "knocks--and-links"},
	} {
		if got := slug(tt.in); got != tt.want {
			t.Errorf("slug(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// brokenLinks returns one line for every relative link in docs that does
// not resolve.
func brokenLinks(docs []string) ([]string, error) {
	var broken []string
	anchorsOf := map[string]map[string]bool{}
	for _, doc := range docs {
		_, links, err := scan(doc)
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			if strings.Contains(l.target, "://") || strings.HasPrefix(l.target, "mailto:") {
				continue
			}
			file, frag, _ := strings.Cut(l.target, "#")
			path := doc
			if file != "" {
				path = filepath.Join(filepath.Dir(doc), file)
			}
			fi, err := os.Stat(path)
			if err != nil {
				broken = append(broken, fmt.Sprintf("%s:%d: link %q: %v", doc, l.line, l.target, err))
				continue
			}
			if frag == "" {
				continue
			}
			if fi.IsDir() || !strings.HasSuffix(path, ".md") {
				broken = append(broken, fmt.Sprintf("%s:%d: link %q: an anchor into something that is no Markdown document", doc, l.line, l.target))
				continue
			}
			anchors, ok := anchorsOf[path]
			if !ok {
				if anchors, _, err = scan(path); err != nil {
					return nil, err
				}
				anchorsOf[path] = anchors
			}
			if !anchors[frag] {
				broken = append(broken, fmt.Sprintf("%s:%d: link %q: %s has no heading with anchor %q", doc, l.line, l.target, path, frag))
			}
		}
	}
	return broken, nil
}

func TestLinks(t *testing.T) {
	broken, err := brokenLinks(documents(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range broken {
		t.Error(b)
	}
}

// TestBrokenLinksFound: the checker finds a missing file, a missing anchor
// and an anchor into a directory, and passes good links, links in code and
// external links.
func TestBrokenLinksFound(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sub/other.md", "# Other\n\n## A `code` heading: yes\n\n## Twice\n\n## Twice\n")
	write("doc.md", `# Doc

[ok](sub/other.md) [ok](sub/other.md#a-code-heading-yes) [ok](sub/other.md#twice-1)
[ok](#doc) [ok](sub/) [ext](https://example.com/x.md#nope) `+"`[code](missing.md)`"+`
[missing file](nope.md)
[missing anchor](sub/other.md#nope)
[dir anchor](sub/#x)
`+"```"+`
[fenced](missing.md)
`+"```"+`
[ref]: sub/gone.md
`)
	broken, err := brokenLinks([]string{filepath.Join(dir, "doc.md")})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"nope.md", "sub/other.md#nope", "sub/#x", "sub/gone.md"}
	if len(broken) != len(want) {
		t.Fatalf("broken links: %q, want one for each of %q", broken, want)
	}
	for i, w := range want {
		if !strings.Contains(broken[i], fmt.Sprintf("%q", w)) {
			t.Errorf("broken[%d] = %q, want the link %q", i, broken[i], w)
		}
	}
}

func TestREADMELength(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n > maxREADMELines {
		t.Errorf("README.md has %d lines, at most %d: move reference material to docs/", n, maxREADMELines)
	}
}
