//go:build ignore

// summary turns the JUnit files of a conformance run into conformance/SUMMARY.md: one row per
// suite (passed, failed, skipped) and the name and first lines of every failure. It reads both
// shapes the harness produces: Ginkgo's <testsuites> (e2e.test) and a bare <testsuite>
// (Cyclonus). It is a `go run` tool of hack/conformance.sh, excluded from `go build/test ./...`
// by its build tag, because conformance runs need a cluster and an hour, not a unit-test slot.
//
// Usage: go run conformance/summary.go -o conformance/SUMMARY.md -note TEXT SUITE=FILE.xml ...
// A SUITE whose FILE is missing is reported as "no report" (the suite did not finish).
package main

import (
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
)

type testSuites struct {
	XMLName xml.Name    `xml:"testsuites"`
	Suites  []testSuite `xml:"testsuite"`
}

type testSuite struct {
	XMLName xml.Name   `xml:"testsuite"`
	Cases   []testCase `xml:"testcase"`
}

type testCase struct {
	Name    string   `xml:"name,attr"`
	Status  string   `xml:"status,attr"` // Ginkgo only: passed, failed, skipped, pending, ...
	Failure *message `xml:"failure"`
	Error   *message `xml:"error"`
	Skipped *message `xml:"skipped"`
}

type message struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

// result is one suite's row.
type result struct {
	suite                   string
	file                    string
	missing                 bool
	passed, failed, skipped int
	notSelected             int
	failures                []failure
	skips                   []string
}

type failure struct {
	name  string
	lines []string
}

// maxFailureLines bounds how much of a failure message SUMMARY.md repeats; the full text is in
// the JUnit file and the suite log.
const (
	maxFailureLines = 6
	maxLineLen      = 300
)

func main() {
	out := flag.String("o", "conformance/SUMMARY.md", "markdown file to write")
	note := flag.String("note", "", "free text placed under the title (cluster, versions, date)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: go run conformance/summary.go [-o FILE] [-note TEXT] SUITE=JUNIT.xml ...")
		os.Exit(2)
	}
	var results []result
	for _, arg := range flag.Args() {
		suite, file, ok := strings.Cut(arg, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "argument %q: want SUITE=JUNIT.xml\n", arg)
			os.Exit(2)
		}
		r, err := summarize(suite, file)
		if err != nil {
			slog.Error("read JUnit report", "suite", suite, "file", file, "err", err)
			os.Exit(1)
		}
		results = append(results, r)
	}
	if err := os.WriteFile(*out, []byte(render(*note, results)), 0o644); err != nil {
		slog.Error("write summary", "file", *out, "err", err)
		os.Exit(1)
	}
	fmt.Print(render(*note, results))
}

func summarize(suite, file string) (result, error) {
	r := result{suite: suite, file: file}
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		r.missing = true
		return r, nil
	}
	if err != nil {
		return r, err
	}
	var cases []testCase
	var all testSuites
	if err := xml.Unmarshal(data, &all); err == nil {
		for _, s := range all.Suites {
			cases = append(cases, s.Cases...)
		}
	} else {
		var one testSuite
		if err2 := xml.Unmarshal(data, &one); err2 != nil {
			return r, fmt.Errorf("parse %s as <testsuites> (%v) or <testsuite>: %w", file, err, err2)
		}
		cases = one.Cases
	}
	for _, c := range cases {
		failed := c.Failure != nil || c.Error != nil
		// Ginkgo also reports its suite nodes ([SynchronizedBeforeSuite], [ReportAfterSuite] ...)
		// as test cases; they are not specs, so they only count when they fail.
		if isSuiteNode(c.Name) && !failed {
			continue
		}
		switch {
		case failed:
			r.failed++
			m := c.Failure
			if m == nil {
				m = c.Error
			}
			r.failures = append(r.failures, failure{name: c.Name, lines: firstLines(m)})
		case c.Skipped != nil || c.Status == "skipped" || c.Status == "pending":
			// Ginkgo reports specs that the focus/label filter left out as skipped with the bare
			// message "skipped"; a spec that ran and called Skip says "skipped - <reason>".
			msg := ""
			if c.Skipped != nil {
				msg = c.Skipped.Message
			}
			if msg == "" || msg == "skipped" || c.Status == "pending" {
				r.notSelected++
				continue
			}
			r.skipped++
			r.skips = append(r.skips, c.Name+": "+strings.TrimPrefix(msg, "skipped - "))
		default:
			r.passed++
		}
	}
	return r, nil
}

func isSuiteNode(name string) bool {
	return strings.HasPrefix(name, "[") && !strings.HasPrefix(name, "[It]")
}

func firstLines(m *message) []string {
	text := strings.TrimSpace(m.Text)
	if text == "" {
		text = strings.TrimSpace(m.Message)
	}
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimRight(l, " \t\r"); l == "" {
			continue
		}
		if len(l) > maxLineLen {
			l = l[:maxLineLen] + " ..."
		}
		lines = append(lines, l)
		if len(lines) == maxFailureLines {
			break
		}
	}
	return lines
}

func render(note string, results []result) string {
	var b strings.Builder
	b.WriteString("# knet conformance summary\n\n")
	b.WriteString("Written by `hack/conformance.sh`; JUnit files and logs are in `_out/conformance/`.\n\n")
	if note != "" {
		b.WriteString(note + "\n\n")
	}
	b.WriteString("| suite | passed | failed | skipped |\n| --- | --- | --- | --- |\n")
	for _, r := range results {
		if r.missing {
			fmt.Fprintf(&b, "| %s | no report | no report | no report |\n", r.suite)
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d |\n", r.suite, r.passed, r.failed, r.skipped)
	}
	for _, r := range results {
		if len(r.failures) == 0 && len(r.skips) == 0 && !r.missing {
			continue
		}
		fmt.Fprintf(&b, "\n## %s\n\n", r.suite)
		if r.missing {
			fmt.Fprintf(&b, "No JUnit report at `%s`: the suite did not run to the end (see its log).\n", r.file)
			continue
		}
		for _, f := range r.failures {
			fmt.Fprintf(&b, "- FAILED %s\n", f.name)
			if len(f.lines) > 0 {
				b.WriteString("\n  ```\n")
				for _, l := range f.lines {
					b.WriteString("  " + l + "\n")
				}
				b.WriteString("  ```\n\n")
			}
		}
		for _, s := range r.skips {
			fmt.Fprintf(&b, "- skipped %s\n", s)
		}
	}
	return b.String()
}
