package main

import (
	"context"

	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	yamlv3 "go.yaml.in/yaml/v3"

	"github.com/heraldrt/herald/internal/auth"
	"github.com/heraldrt/herald/internal/namespace"
)

// The configuration file is YAML: a mapping of herald serve's flag names
// to values. Where a setting comes from follows one rule: a flag on the
// command line wins over the environment, which wins over the file, which
// wins over the default. koanf merges the layers; the file is checked
// first (checkConfigFile) so that every mistake is reported with its line.

// choices are the settings that take one of a few words.
var choices = map[string][]string{
	"log-format": {"text", "json"},
	"log-level":  {"debug", "info", "warn", "error"},
}

// listKeys may be given as YAML lists (joined with commas).
var listKeys = map[string]bool{"allowed-origins": true, "allowed-hosts": true}

// pathKeys name files; a relative path in the configuration file is
// relative to the file's own folder.
var pathKeys = map[string]bool{"auth-config": true, "namespaces": true}

func configCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("config", "check FILE | defaults",
		"Check a configuration file for herald serve --config, reporting every error with\n"+
			"its line and the valid choices (check FILE), or print a complete configuration\n"+
			"file with every setting at its default, commented (defaults).", stdout)
	if err := fs.parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() == 2 && fs.Arg(0) == "check":
		return checkConfig(ctx, fs.Arg(1), stdout)
	case fs.NArg() == 1 && fs.Arg(0) == "defaults":
		return printDefaults(stdout)
	case fs.NArg() == 1 && fs.Arg(0) == "check":
		return fs.usage("check needs the FILE to check")
	case fs.NArg() == 0:
		return fs.usage("say what to do: check FILE or defaults")
	}
	return fs.usage("unknown arguments %q: want check FILE or defaults", fs.Args())
}

// configError is one mistake in a configuration file.
type configError struct {
	line int
	msg  string
}

func checkConfig(ctx context.Context, path string, stdout io.Writer) error {
	errs := checkConfigFile(ctx, path)
	if len(errs) == 0 {
		fmt.Fprintf(stdout, "%s: ok\n", path)
		return nil
	}
	for _, e := range errs {
		fmt.Fprintln(stdout, e.format(path))
	}
	return fmt.Errorf("%s: %d error(s)", path, len(errs))
}

func (e configError) format(path string) string {
	if e.line > 0 {
		return fmt.Sprintf("%s:%d: %s", path, e.line, e.msg)
	}
	return fmt.Sprintf("%s: %s", path, e.msg)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// checkConfigFile returns every mistake in the configuration file at path:
// YAML syntax, unknown or repeated keys, values of the wrong type or out
// of their choices, and auth or namespace files that do not load.
func checkConfigFile(ctx context.Context, path string) []configError {
	data, err := os.ReadFile(path)
	if err != nil {
		return []configError{{msg: err.Error()}}
	}
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(data, &doc); err != nil {
		var out []configError
		for _, l := range strings.Split(strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n"), "\n") {
			l = strings.TrimSpace(l)
			if m := yamlLine.FindStringSubmatch(l); m != nil {
				n, _ := strconv.Atoi(m[1])
				out = append(out, configError{line: n, msg: "not valid YAML: " + m[2]})
			} else if l != "" {
				out = append(out, configError{msg: "not valid YAML: " + strings.TrimPrefix(l, "yaml: ")})
			}
		}
		return out
	}
	if len(doc.Content) == 0 {
		return nil // empty: every setting at its default
	}
	top := doc.Content[0]
	if top.Kind != yamlv3.MappingNode {
		return []configError{{line: top.Line, msg: "the file must be a mapping of settings (flag names of herald serve) to values, e.g. \"addr: 127.0.0.1:8080\""}}
	}
	ref := serveFlags(&serveSettings{}, io.Discard)
	var names []string
	ref.VisitAll(func(fl *flag.Flag) {
		if fl.Name != "config" {
			names = append(names, fl.Name)
		}
	})
	var errs []configError
	seen := map[string]int{}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		name := k.Value
		if first, ok := seen[name]; ok {
			errs = append(errs, configError{k.Line, fmt.Sprintf("%s is set twice (first on line %d)", name, first)})
			continue
		}
		seen[name] = k.Line
		if name == "config" || ref.Lookup(name) == nil {
			errs = append(errs, configError{k.Line, fmt.Sprintf("unknown setting %q%s; the settings are herald serve's flag names (herald config defaults lists them all)",
				name, suggest(name, names, ""))})
			continue
		}
		value, msg := nodeValue(name, v)
		if msg != "" {
			errs = append(errs, configError{v.Line, name + ": " + msg})
			continue
		}
		if err := ref.Set(name, value); err != nil {
			var want any
			if g, ok := ref.Lookup(name).Value.(flag.Getter); ok {
				want = g.Get()
			}
			errs = append(errs, configError{v.Line, fmt.Sprintf("%s: invalid value %q: %s", name, value, wantValue(want))})
			continue
		}
		if cs := choices[name]; cs != nil && !slices.Contains(cs, value) {
			errs = append(errs, configError{v.Line, fmt.Sprintf("%s: invalid value %q: want one of %s", name, value, strings.Join(cs, ", "))})
			continue
		}
		if pathKeys[name] && value != "" {
			if msg := checkReferenced(ctx, name, resolvePath(path, value)); msg != "" {
				errs = append(errs, configError{v.Line, msg})
			}
		}
	}
	return errs
}

// nodeValue returns a setting's value as its flag would take it, or why
// it cannot be one.
func nodeValue(name string, v *yamlv3.Node) (string, string) {
	switch {
	case v.Kind == yamlv3.SequenceNode && listKeys[name]:
		var items []string
		for _, it := range v.Content {
			if it.Kind != yamlv3.ScalarNode {
				return "", "want a list of names"
			}
			items = append(items, it.Value)
		}
		return strings.Join(items, ","), ""
	case v.Kind != yamlv3.ScalarNode:
		return "", "want a single value, not a list or a mapping"
	case v.Tag == "!!null":
		return "", "no value: give one, or remove the line to keep the default"
	}
	return v.Value, ""
}

// checkReferenced loads the auth or namespaces file a setting names.
func checkReferenced(ctx context.Context, name, path string) string {
	switch name {
	case "namespaces":
		if _, err := namespace.Load(path); err != nil {
			return err.Error() // names the file
		}
	case "auth-config":
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := auth.LoadConfig(ctx, path, slog.New(slog.DiscardHandler)); err != nil {
			return fmt.Sprintf("auth-config: %v", err)
		}
	}
	return ""
}

// resolvePath makes a path given in the configuration file at cfgPath
// relative to that file's folder.
func resolvePath(cfgPath, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(cfgPath), p)
}

// applyConfigFile merges the defaults, the configuration file at path,
// the environment and the command line (in that order, each winning over
// the ones before) and sets every flag to the result. Without a file the
// flags already hold it (envFlags reads the environment).
func (f *envFlags) applyConfigFile(path string) error {
	if path == "" {
		return nil
	}
	if errs := checkConfigFile(context.Background(), path); len(errs) > 0 {
		lines := make([]string, len(errs))
		for i, e := range errs {
			lines[i] = "  " + e.format(path)
		}
		return fmt.Errorf("configuration file %s has %d error(s) (herald config check %s):\n%s",
			path, len(errs), path, strings.Join(lines, "\n"))
	}
	k := koanf.New(".")
	defaults := map[string]any{}
	for name, def := range f.defaults {
		if name != "config" {
			defaults[name] = def
		}
	}
	if err := k.Load(confmap.Provider(defaults, "."), nil); err != nil {
		return err
	}
	fromFile := koanf.New(".")
	if err := fromFile.Load(file.Provider(path), yaml.Parser()); err != nil {
		return fmt.Errorf("configuration file %s: %w", path, err)
	}
	for name := range pathKeys {
		if fromFile.Exists(name) {
			if err := fromFile.Set(name, resolvePath(path, fmt.Sprint(fromFile.Get(name)))); err != nil {
				return err
			}
		}
	}
	if err := k.Merge(fromFile); err != nil {
		return err
	}
	if err := k.Load(env.Provider(".", env.Opt{EnvironFunc: f.environ, TransformFunc: f.envToFlag}), nil); err != nil {
		return err
	}
	set := map[string]any{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = fl.Value.String() })
	if err := k.Load(confmap.Provider(set, "."), nil); err != nil {
		return err
	}
	for name := range defaults {
		if err := f.Set(name, settingString(k.Get(name))); err != nil {
			return fmt.Errorf("%s: %w", name, err) // checked above; not expected
		}
	}
	return nil
}

// environ returns, for each flag, its first environment variable that is
// set (and not empty), as envFlags reads them.
func (f *envFlags) environ() []string {
	var out []string
	for _, keys := range f.envKeys {
		for _, k := range keys {
			if v, ok := os.LookupEnv(k); ok && v != "" {
				out = append(out, k+"="+v)
				break
			}
		}
	}
	return out
}

// envToFlag names the flag of an environment variable.
func (f *envFlags) envToFlag(key, value string) (string, any) {
	for name, keys := range f.envKeys {
		if name != "config" && slices.Contains(keys, key) {
			return name, value
		}
	}
	return "", nil
}

func settingString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case []any:
		parts := make([]string, len(v))
		for i, p := range v {
			parts[i] = fmt.Sprint(p)
		}
		return strings.Join(parts, ",")
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return fmt.Sprint(v)
}

// printDefaults prints a configuration file with every setting of herald
// serve at its default, each with its help and environment variable.
func printDefaults(w io.Writer) error {
	fs := serveFlags(&serveSettings{}, io.Discard)
	var b strings.Builder
	b.WriteString("# Herald configuration (herald serve --config FILE, or HERALD_CONFIG=FILE).\n" +
		"# Every setting is a flag of herald serve, shown here at its default.\n" +
		"# Precedence: a flag on the command line > its environment variable > this file > the default.\n" +
		"# Relative paths (auth-config, namespaces) are relative to this file's folder.\n" +
		"# Check a file with: herald config check FILE\n")
	var err error
	fs.VisitAll(func(fl *flag.Flag) {
		if fl.Name == "config" || err != nil {
			return
		}
		_, help := flag.UnquoteUsage(fl)
		b.WriteString("\n")
		for _, l := range wrap(help, 88) {
			b.WriteString("# " + l + "\n")
		}
		if cs := choices[fl.Name]; cs != nil {
			b.WriteString("# one of: " + strings.Join(cs, ", ") + "\n")
		}
		def := fs.defaults[fl.Name]
		var want any
		if g, ok := fl.Value.(flag.Getter); ok {
			want = g.Get()
		}
		switch want.(type) {
		case bool, int, float64:
			b.WriteString(fl.Name + ": " + def + "\n")
		default: // strings and durations
			b.WriteString(fl.Name + ": " + strconv.Quote(def) + "\n")
		}
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// wrap splits s into lines of at most width characters, at spaces.
func wrap(s string, width int) []string {
	var lines []string
	for _, para := range strings.Split(s, "\n") {
		line := ""
		for _, word := range strings.Fields(para) {
			if line != "" && len(line)+1+len(word) > width {
				lines = append(lines, line)
				line = ""
			}
			if line != "" {
				line += " "
			}
			line += word
		}
		lines = append(lines, line)
	}
	return lines
}
