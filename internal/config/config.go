// Package config loads tierfs's TOML configuration file. Each package owns
// its table, with defaults and a Validate method: [[tier]] (tiering),
// [policy] (policy), [pmem] (pmem), [mount] (mountutil), [metrics]
// (internal/metrics); [log] is here.
// This package composes them, refuses unknown keys, and reports every
// problem as "FILE:LINE: KEY: message".
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/tierfs/tierfs/internal/metrics"
	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/mountutil"
	"github.com/tierfs/tierfs/pmem"
	"github.com/tierfs/tierfs/policy"
	"github.com/tierfs/tierfs/tiering"
)

// Log is the [log] table.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `toml:"level"`
	// File is where the daemon appends its log, from the mount on; ""
	// logs to stderr (docs/operating.md: where a detached daemon logs).
	File string `toml:"file"`
}

// Log levels.
var logLevels = []string{"debug", "info", "warn", "error"}

// Validate checks the level and the file; the errors are *units.KeyError
// for "log.level" and "log.file".
func (l Log) Validate() error {
	var errs []error
	known := false
	for _, v := range logLevels {
		known = known || l.Level == v
	}
	if !known {
		errs = append(errs, units.Errorf("log.level", "unknown level %q (want debug, info, warn or error)", l.Level))
	}
	// The daemon runs from "/" once detached: a relative name would mean
	// something else there than where it was written.
	if l.File != "" && !filepath.IsAbs(l.File) {
		errs = append(errs, units.Errorf("log.file", "must be an absolute path, got %q", l.File))
	}
	return errors.Join(errs...)
}

// Config is the whole file.
type Config struct {
	Tiers   []tiering.TierConfig `toml:"tier"`
	Policy  policy.Config        `toml:"policy"`
	PMem    pmem.Config          `toml:"pmem"`
	Mount   mountutil.Config     `toml:"mount"`
	Metrics metrics.Config       `toml:"metrics"`
	Log     Log                  `toml:"log"`

	// Source is the file the configuration came from ("" for Default).
	Source string `toml:"-"`

	// loc finds the lines of keys in the source text; nil for Default.
	loc *locator
}

// Default returns every package's defaults and no tiers.
func Default() Config {
	return Config{
		Policy:  policy.DefaultConfig(),
		PMem:    pmem.DefaultConfig(),
		Mount:   mountutil.DefaultConfig(),
		Metrics: metrics.DefaultConfig(),
		Log:     Log{Level: "info"},
	}
}

// Error is one problem in a configuration file. It prints as
// "FILE:LINE: KEY: message"; the line is left out when the key is not in
// the file (a missing table), the key when there is none (most syntax
// errors).
type Error struct {
	File string // the name given to Parse or Load
	Line int    // 1-based; 0 when unknown
	Key  string // e.g. "tier[1].path", "policy.migrate_threshold"
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes data (named name in errors) on top of Default and
// validates the result. The error is an *Error, or several joined with
// errors.Join, one per line: every problem in the file, not the first (a
// syntax error ends the reading, as what follows it cannot be parsed).
func Parse(name string, data []byte) (*Config, error) {
	c := Default()
	c.Source = name
	errs, data := c.checkEncoding(data)
	c.loc = scan(data)
	decodeErrs, bad := c.decode(data)
	errs = append(errs, decodeErrs...)
	if bad != nil {
		// Validate what decoded, leaving out keys already reported: a
		// value that did not decode kept its default, which says nothing.
		for _, e := range c.validate() {
			if !bad[e.Key] && !parentIn(e.Key, bad) {
				errs = append(errs, e)
			}
		}
	}
	if len(errs) > 0 {
		return nil, joinSorted(errs)
	}
	return &c, nil
}

// utf8BOM is the byte-order mark some editors put at the start of a UTF-8
// file.
const utf8BOM = "\xef\xbb\xbf"

// checkEncoding refuses a byte-order mark: invisible in most editors, it
// is a sign that the file went through a tool that may have changed more.
// It returns the text without a UTF-8 one, so that the rest is still
// checked and its keys found on their lines.
func (c *Config) checkEncoding(data []byte) ([]*Error, []byte) {
	switch {
	case bytes.HasPrefix(data, []byte(utf8BOM)):
		return []*Error{{File: c.Source, Line: 1, Msg: "the file starts with a UTF-8 byte-order mark (U+FEFF): " +
			`save it as UTF-8 without one (sed -i '1s/^\xEF\xBB\xBF//' FILE)`}}, data[len(utf8BOM):]
	case bytes.HasPrefix(data, []byte("\xff\xfe")), bytes.HasPrefix(data, []byte("\xfe\xff")):
		// The decoder would stop at its NUL bytes; say why instead.
		return []*Error{{File: c.Source, Line: 1, Msg: "the file is UTF-16 (it starts with a UTF-16 byte-order mark): save it as UTF-8"}}, nil
	}
	return nil, data
}

// decode fills c from data and reports decode errors and unknown keys. It
// decodes each table key by key, so that a value of the wrong type, or one
// its type refuses ("-1" for a size), is reported and the other keys are
// still read. bad holds the keys reported; it is nil when the text did
// not parse at all.
func (c *Config) decode(data []byte) (errs []*Error, bad map[string]bool) {
	if data == nil {
		return nil, nil
	}
	var raw map[string]toml.Primitive
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&raw)
	if err != nil {
		return []*Error{c.decodeError(err, data)}, nil
	}
	bad = map[string]bool{}
	report := func(key string, err error) {
		e := c.valueError(key, err)
		errs = append(errs, e)
		bad[e.Key] = true
	}
	if p, ok := raw["tier"]; ok {
		var tiers []toml.Primitive
		if v := valueOf(md, p); !isArrayOfTables(v) {
			report("tier", fmt.Errorf("must be an array of tables, written [[tier]]; got %s", units.TOMLType(v)))
		} else if err := md.PrimitiveDecode(p, &tiers); err != nil {
			report("tier", err)
		} else {
			c.Tiers = make([]tiering.TierConfig, len(tiers))
			for i, tp := range tiers {
				decodeTable(md, tp, fmt.Sprintf("tier[%d]", i), &c.Tiers[i], report)
			}
		}
	}
	for _, s := range []struct {
		name string
		dst  any
	}{
		{"policy", &c.Policy},
		{"pmem", &c.PMem},
		{"mount", &c.Mount},
		{"metrics", &c.Metrics},
		{"log", &c.Log},
	} {
		if p, ok := raw[s.name]; ok {
			decodeTable(md, p, s.name, s.dst, report)
		}
	}
	return append(errs, c.unknownKeys(md)...), bad
}

// decodeTable decodes the TOML table prim into the struct dst one key at a
// time, calling report for each key that does not decode; its field keeps
// the value it had. Keys that name no field (exactly: the decoder would
// match names in any case) stay undecoded, for unknownKeys.
func decodeTable(md toml.MetaData, prim toml.Primitive, key string, dst any, report func(string, error)) {
	// The decoder would take a value that is not a table as an empty one.
	if v, ok := valueOf(md, prim).(map[string]any); !ok {
		report(key, fmt.Errorf("must be a table, got %s", units.TOMLType(v)))
		return
	}
	var keys map[string]toml.Primitive
	if err := md.PrimitiveDecode(prim, &keys); err != nil {
		report(key, err)
		return
	}
	rv := reflect.ValueOf(dst).Elem()
	fields := map[string]int{}
	for i := 0; i < rv.NumField(); i++ {
		if tag := strings.Split(rv.Type().Field(i).Tag.Get("toml"), ",")[0]; tag != "" && tag != "-" {
			fields[tag] = i
		}
	}
	// In key order: errors on one line (an inline table) keep an order.
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		i, ok := fields[k]
		if !ok {
			continue
		}
		f := rv.Field(i)
		old := reflect.New(f.Type()).Elem()
		old.Set(f)
		if err := md.PrimitiveDecode(keys[k], f.Addr().Interface()); err != nil {
			f.Set(old)
			report(key+"."+toml.Key{k}.String(), err)
		}
	}
}

// valueOf is the value of prim as the decoder holds it: map[string]any for
// a table, []map[string]any for an array of tables, and so on.
func valueOf(md toml.MetaData, prim toml.Primitive) any {
	var v any
	if md.PrimitiveDecode(prim, &v) != nil {
		return nil
	}
	return v
}

func isArrayOfTables(v any) bool {
	switch a := v.(type) {
	case []map[string]any:
		return true
	case []any:
		// An inline array of inline tables is one too.
		for _, e := range a {
			if _, ok := e.(map[string]any); !ok {
				return false
			}
		}
		return true
	}
	return false
}

// valueError is the *Error for key, whose value err refuses.
func (c *Config) valueError(key string, err error) *Error {
	msg := err.Error()
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg = pe.Message
	} else if m := lastKeyRE.FindStringSubmatch(msg); m != nil {
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "toml: ")
	}
	return &Error{File: c.Source, Line: c.loc.line(key), Key: key, Msg: friendlyTypeError(key, msg)}
}

// lastKeyRE takes apart the plain errors BurntSushi/toml makes for type
// mismatches: `toml: line 7 (last key "policy.migrate_threshold"): ...`.
var lastKeyRE = regexp.MustCompile(`(?s)^toml: (?:line \d+ )?\(last key "((?:[^"\\]|\\.)*)"\): (.*)$`)

// decodeError locates an error that stopped the TOML decoder: a syntax
// error, or a file it cannot read.
func (c *Config) decodeError(err error, data []byte) *Error {
	e := &Error{File: c.Source, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return e
	}
	e.Msg = pe.Message
	e.Line = pe.Position.Line
	// The lexer counts an error at a line's end as on the next line; the
	// byte offset is right.
	if s := pe.Position.Start; s >= 0 && s < len(data) {
		e.Line = bytes.Count(data[:s], []byte("\n")) + 1
	}
	// LastKey is the last key the parser saw, which may be a table above
	// the line at fault; name the key on the error's line instead.
	e.Key = c.loc.keyOn(e.Line, pe.LastKey)
	return e
}

var typeMismatchRE = regexp.MustCompile(`^incompatible types: TOML value has type (\S+); destination has type (\S+)$`)
var tableMismatchRE = regexp.MustCompile(`^type mismatch for \S+: expected table but found (\S+)$`)

// friendlyTypeError rewords the decoder's type errors.
func friendlyTypeError(key, msg string) string {
	tomlType := map[string]string{
		"string": "a string", "int64": "an integer", "float64": "a float",
		"bool": "a boolean", "map[string]any": "a table", "[]any": "an array",
		"[]map[string]any": "an array of tables", "time.Time": "a date-time",
	}
	goType := map[string]string{
		"float": "a number", "integer": "an integer", "string": "a string",
		"boolean": "true or false", "slice": "an array", "map": "a table",
	}
	name := func(m map[string]string, s string) string {
		if v, ok := m[s]; ok {
			return v
		}
		return s
	}
	if m := typeMismatchRE.FindStringSubmatch(msg); m != nil {
		if key == "tier" {
			return fmt.Sprintf("must be an array of tables, written [[tier]]; got %s", name(tomlType, m[1]))
		}
		return fmt.Sprintf("wrong type: want %s, got %s", name(goType, m[2]), name(tomlType, m[1]))
	}
	if m := tableMismatchRE.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("must be a table, got %s", name(tomlType, m[1]))
	}
	return msg
}

// unknownKeys refuses keys that no field takes, and keys that a field
// took only because BurntSushi/toml matches names case-insensitively.
func (c *Config) unknownKeys(md toml.MetaData) []*Error {
	known := knownKeys(reflect.TypeOf(Config{}), "", nil)
	bad := map[string]bool{}
	var order []string
	add := func(k string) {
		if !bad[k] {
			bad[k] = true
			order = append(order, k)
		}
	}
	for _, k := range md.Undecoded() {
		// Keys of a table whose decoding failed are undecoded too;
		// those are reported already.
		if s := k.String(); !known[s] {
			add(s)
		}
	}
	for _, k := range md.Keys() {
		if s := k.String(); !known[s] {
			add(s)
		}
	}
	var errs []*Error
	for _, k := range order {
		if parentIn(k, bad) {
			continue // reported with its table
		}
		msg := "unknown key"
		for kk := range known {
			if strings.EqualFold(kk, k) {
				msg = fmt.Sprintf("unknown key (keys are case-sensitive: did you mean %q?)",
					kk[strings.LastIndexByte(kk, '.')+1:])
			}
		}
		keys := c.loc.occ[k]
		if len(keys) == 0 {
			errs = append(errs, &Error{File: c.Source, Key: k, Msg: msg})
		}
		for _, ik := range keys {
			errs = append(errs, &Error{File: c.Source, Line: c.loc.lines[ik], Key: ik, Msg: msg})
		}
	}
	return errs
}

// parentIn reports whether a table above k is in set.
func parentIn(k string, set map[string]bool) bool {
	for i := len(k) - 1; i > 0; i-- {
		if k[i] == '.' && set[k[:i]] {
			return true
		}
	}
	return false
}

// knownKeys lists the dotted keys of t's toml-tagged fields, without
// array indexes: "tier", "tier.path", "policy.pin".
func knownKeys(t reflect.Type, prefix string, into map[string]bool) map[string]bool {
	if into == nil {
		into = map[string]bool{}
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := strings.Split(f.Tag.Get("toml"), ",")[0]
		if tag == "-" {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		k := prefix + tag
		into[k] = true
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(textUnmarshaler) {
			knownKeys(ft, k+".", into)
		}
	}
	return into
}

var textUnmarshaler = reflect.TypeOf((*interface{ UnmarshalText([]byte) error })(nil)).Elem()

// Validate checks every table and reports every problem. Errors name the
// key and, for a parsed file, the line.
func (c *Config) Validate() error {
	return joinSorted(c.validate())
}

// validate has each table's package check its table.
func (c *Config) validate() []*Error {
	var errs []*Error
	for _, err := range []error{
		tiering.ValidateTiers(c.Tiers),
		c.Policy.Validate(),
		c.PMem.Validate(),
		c.Mount.Validate(),
		c.Metrics.Validate(),
		c.Log.Validate(),
	} {
		for _, e := range flatten(err) {
			errs = append(errs, c.locate(e))
		}
	}
	return errs
}

// flatten lists the errors joined in err (none for nil).
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

// CheckMountpoint refuses tier directories that are, or are inside, the
// mountpoint, and a mountpoint inside a tier directory.
func (c *Config) CheckMountpoint(mountpoint string) error {
	var errs []*Error
	for _, e := range flatten(tiering.CheckMountpoint(c.Tiers, mountpoint)) {
		errs = append(errs, c.locate(e))
	}
	return joinSorted(errs)
}

// locate turns a *units.KeyError into an *Error with the key's line.
func (c *Config) locate(err error) *Error {
	var ke *units.KeyError
	if !errors.As(err, &ke) {
		return &Error{File: c.Source, Msg: err.Error()}
	}
	return &Error{File: c.Source, Line: c.loc.line(ke.Key), Key: ke.Key, Msg: ke.Msg}
}

// joinSorted orders errors by line (those with no line last) and joins
// them; nil if there are none.
func joinSorted(errs []*Error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	sort.SliceStable(errs, func(i, j int) bool {
		li, lj := errs[i].Line, errs[j].Line
		if (li == 0) != (lj == 0) {
			return lj == 0
		}
		return li < lj
	})
	list := make([]error, len(errs))
	for i, e := range errs {
		list[i] = e
	}
	return errors.Join(list...)
}

// TierThreshold is tier i's migrate_threshold: its own if set, else
// [policy]'s.
func (c *Config) TierThreshold(i int) float64 {
	if i >= 0 && i < len(c.Tiers) && c.Tiers[i].MigrateThreshold != nil {
		return *c.Tiers[i].MigrateThreshold
	}
	return c.Policy.MigrateThreshold
}

// String is the effective configuration, defaults filled in, as TOML that
// Parse accepts.
func (c *Config) String() string {
	var b bytes.Buffer
	b.WriteString("# tierfs effective configuration")
	if c.Source != "" {
		fmt.Fprintf(&b, " (from %s, defaults filled in)", c.Source)
	}
	b.WriteString("\n\n")
	enc := toml.NewEncoder(&b)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		fmt.Fprintf(&b, "# cannot encode: %v\n", err)
	}
	return b.String()
}

// locator knows on which line each key of a TOML text is. It is a small
// scanner, not a parser: it follows table headers ([policy], [[tier]],
// counting array elements), "key = value" lines and values that span
// lines (multi-line strings and arrays). It only has to be right for text
// that BurntSushi/toml parsed.
type locator struct {
	// lines maps an indexed key ("tier[1].path", "tier[1]", "policy") to
	// the line of its first appearance.
	lines map[string]int
	// occ maps a key as BurntSushi/toml names it ("tier.path") to the
	// indexed keys it appears as, in file order.
	occ map[string][]string
	// at lists the indexed keys on each line (a key set twice is on
	// both), and raw maps them back to BurntSushi/toml's name.
	at  map[int][]string
	raw map[string]string
}

// Sets reports whether the file sets key ("mount.supervisor"), rather
// than leaving it at its default.
func (c *Config) Sets(key string) bool {
	return c.loc != nil && c.loc.lines[key] != 0
}

// line is the line of key, or of the nearest table above it that is in the
// file; 0 if none is.
func (l *locator) line(key string) int {
	if l == nil {
		return 0
	}
	for key != "" {
		if n, ok := l.lines[key]; ok {
			return n
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// keyOn names the key that starts on line n: the indexed form of raw
// ("tier.path" -> "tier[1].path") if it is there, else the only key
// there; "" if none or several.
func (l *locator) keyOn(n int, raw string) string {
	if l == nil {
		return ""
	}
	keys := l.at[n]
	for _, k := range keys {
		if l.raw[k] == raw {
			return k
		}
	}
	if len(keys) == 1 {
		return keys[0]
	}
	return ""
}

type keyPart struct {
	name string
	idx  int // index in an array of tables; -1 if not one
}

// joinParts makes "tier[1].path" (or "tier.path" if raw) from parts.
func joinParts(raw bool, parts []keyPart) string {
	var b strings.Builder
	for _, p := range parts {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(toml.Key{p.name}.String())
		if !raw && p.idx >= 0 {
			fmt.Fprintf(&b, "[%d]", p.idx)
		}
	}
	return b.String()
}

func scan(data []byte) *locator {
	s := &scanner{
		src:  string(data),
		line: 1,
		loc: &locator{lines: map[string]int{}, occ: map[string][]string{},
			at: map[int][]string{}, raw: map[string]string{}},
		arrays: map[string]int{},
	}
	s.run()
	return s.loc
}

type scanner struct {
	src    string
	i      int
	line   int
	loc    *locator
	table  []keyPart      // the current table, indexed
	arrays map[string]int // [[x]] headers seen so far, by raw key
}

func (s *scanner) peek() byte {
	if s.i < len(s.src) {
		return s.src[s.i]
	}
	return 0
}

func (s *scanner) record(parts []keyPart, line int) {
	ik, rk := joinParts(false, parts), joinParts(true, parts)
	s.loc.at[line] = append(s.loc.at[line], ik)
	s.loc.raw[ik] = rk
	if _, ok := s.loc.lines[ik]; !ok {
		s.loc.lines[ik] = line
		s.loc.occ[rk] = append(s.loc.occ[rk], ik)
	}
}

func (s *scanner) run() {
	for s.i < len(s.src) {
		s.skipSpace()
		switch s.peek() {
		case 0:
			return
		case '\n':
			s.i++
			s.line++
		case '#':
			s.skipLine()
		case '[':
			s.header()
		default:
			line := s.line
			names, ok := s.key()
			s.skipSpace()
			if !ok || s.peek() != '=' {
				s.skipLine()
				continue
			}
			s.i++
			parts := append([]keyPart(nil), s.table...)
			for _, n := range names {
				parts = append(parts, keyPart{n, -1})
			}
			s.record(parts, line)
			s.value()
		}
	}
}

// header reads [a.b] or [[a.b]].
func (s *scanner) header() {
	line := s.line
	s.i++
	array := s.peek() == '['
	if array {
		s.i++
	}
	names, ok := s.key()
	if !ok {
		s.skipLine()
		return
	}
	parts := make([]keyPart, len(names))
	for j, n := range names {
		parts[j] = keyPart{n, -1}
		rk := joinParts(true, parts[:j+1])
		if array && j == len(names)-1 {
			s.arrays[rk]++
		}
		if n := s.arrays[rk]; n > 0 {
			parts[j].idx = n - 1
		}
	}
	s.table = parts
	s.record(parts, line)
	s.skipLine()
}

// key reads a dotted key of bare, "basic" and 'literal' parts.
func (s *scanner) key() ([]string, bool) {
	var names []string
	for {
		s.skipSpace()
		switch s.peek() {
		case '"':
			start := s.i
			s.i++
			for s.i < len(s.src) && s.src[s.i] != '"' && s.src[s.i] != '\n' {
				if s.src[s.i] == '\\' {
					s.i++
				}
				s.i++
			}
			s.i = min(s.i+1, len(s.src))
			q := s.src[start:s.i]
			n, err := strconv.Unquote(q)
			if err != nil {
				n = strings.Trim(q, `"`)
			}
			names = append(names, n)
		case '\'':
			start := s.i + 1
			end := strings.IndexAny(s.src[start:], "'\n")
			if end < 0 {
				return nil, false
			}
			names = append(names, s.src[start:start+end])
			s.i = start + end + 1
		default:
			start := s.i
			for s.i < len(s.src) && isBare(s.src[s.i]) {
				s.i++
			}
			if s.i == start {
				return nil, false
			}
			names = append(names, s.src[start:s.i])
		}
		s.skipSpace()
		if s.peek() != '.' {
			return names, true
		}
		s.i++
	}
}

func isBare(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func (s *scanner) skipSpace() {
	for s.i < len(s.src) && (s.src[s.i] == ' ' || s.src[s.i] == '\t' || s.src[s.i] == '\r') {
		s.i++
	}
}

// skipLine moves to the newline that ends the line.
func (s *scanner) skipLine() {
	if j := strings.IndexByte(s.src[s.i:], '\n'); j >= 0 {
		s.i += j
	} else {
		s.i = len(s.src)
	}
}

// value skips a value up to the newline that ends it, counting the lines
// of multi-line strings and arrays.
func (s *scanner) value() {
	depth := 0
	for s.i < len(s.src) {
		rest := s.src[s.i:]
		switch c := rest[0]; {
		case c == '\n':
			if depth <= 0 {
				return
			}
			s.line++
			s.i++
		case c == '#':
			s.skipLine()
		case strings.HasPrefix(rest, `"""`), strings.HasPrefix(rest, "'''"):
			s.multiline(rest[:3])
		case c == '"' || c == '\'':
			s.i++
			for s.i < len(s.src) && s.src[s.i] != c && s.src[s.i] != '\n' {
				if c == '"' && s.src[s.i] == '\\' {
					s.i++
				}
				s.i++
			}
			if s.i < len(s.src) && s.src[s.i] == c {
				s.i++
			}
		case c == '[' || c == '{':
			depth++
			s.i++
		case c == ']' || c == '}':
			depth--
			s.i++
		default:
			s.i++
		}
	}
}

// multiline skips a multi-line basic or literal string.
func (s *scanner) multiline(delim string) {
	escapes := delim[0] == '"'
	s.i += 3
	for s.i < len(s.src) {
		switch {
		case escapes && s.src[s.i] == '\\':
			s.i++
			if s.i < len(s.src) {
				if s.src[s.i] == '\n' {
					s.line++
				}
				s.i++
			}
		case strings.HasPrefix(s.src[s.i:], delim):
			s.i += 3
			// Up to two more quotes belong to the string.
			for k := 0; k < 2 && s.i < len(s.src) && s.src[s.i] == delim[0]; k++ {
				s.i++
			}
			return
		default:
			if s.src[s.i] == '\n' {
				s.line++
			}
			s.i++
		}
	}
}
