package reload

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
)

// Diff returns the configuration keys whose values differ between a and
// b, two values of one configuration struct type, as YAML paths:
// "http.listen", "auth.tokens", "sources.logs[1].rules". It descends into
// nested structs (inline ones included) and into lists of equal length;
// a list whose length changed is one key, and so is any other value
// (maps, scalars, structs without YAML keys such as netip.Prefix). Fields
// without a YAML key ("-") and functions are not configuration and are
// skipped.
func Diff(a, b any) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() != vb.Type() {
		panic(fmt.Sprintf("reload.Diff: %s and %s", va.Type(), vb.Type()))
	}
	var out []string
	diff(va, vb, "", &out)
	return out
}

func diff(a, b reflect.Value, path string, out *[]string) {
	switch a.Kind() {
	case reflect.Func, reflect.Chan, reflect.UnsafePointer:
		return
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				*out = append(*out, path)
			}
			return
		}
		diff(a.Elem(), b.Elem(), path, out)
		return
	case reflect.Struct:
		if hasYAMLKeys(a.Type()) {
			for i := range a.NumField() {
				f := a.Type().Field(i)
				name, inline, ok := yamlKey(f)
				if !ok {
					continue
				}
				p := path
				if !inline {
					p = join(path, name)
				}
				diff(a.Field(i), b.Field(i), p, out)
			}
			return
		}
	case reflect.Slice, reflect.Array:
		if a.Len() == b.Len() && elemHasKeys(a.Type().Elem()) {
			for i := range a.Len() {
				diff(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i), out)
			}
			return
		}
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		*out = append(*out, path)
	}
}

// yamlKey returns the YAML key of a field, whether it is inlined, and
// whether it is configuration at all.
func yamlKey(f reflect.StructField) (name string, inline, ok bool) {
	if !f.IsExported() || f.Type.Kind() == reflect.Func {
		return "", false, false
	}
	tag, has := f.Tag.Lookup("yaml")
	if !has {
		return strings.ToLower(f.Name), false, true // yaml.v3's default key
	}
	name, opts, _ := strings.Cut(tag, ",")
	if name == "-" {
		return "", false, false
	}
	if strings.Contains(","+opts+",", ",inline,") {
		return "", true, true
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, false, true
}

func hasYAMLKeys(t reflect.Type) bool {
	for i := range t.NumField() {
		if _, ok := t.Field(i).Tag.Lookup("yaml"); ok {
			return true
		}
	}
	return false
}

func elemHasKeys(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct && hasYAMLKeys(t)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// Keys returns a Reloadable function for key patterns: a key is
// reloadable when it is one of the patterns or below one. In patterns,
// [*] stands for any list index: "sources.logs[*].rules".
func Keys(patterns ...string) func(key string) bool {
	return func(key string) bool {
		k := indexRe.ReplaceAllString(key, "[*]")
		for _, p := range patterns {
			if k == p || strings.HasPrefix(k, p+".") || strings.HasPrefix(k, p+"[") {
				return true
			}
		}
		return false
	}
}

var indexRe = regexp.MustCompile(`\[\d+\]`)
