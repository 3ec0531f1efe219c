package main

import (
	"reflect"
	"strings"
)

// tomlKeys lists, per section, the toml keys of a config struct's fields.
func tomlKeys(c Config) map[string][]string {
	out := map[string][]string{}
	ct := reflect.TypeOf(c)
	for i := range ct.NumField() {
		sec := ct.Field(i)
		name, _, _ := strings.Cut(sec.Tag.Get("toml"), ",")
		for j := range sec.Type.NumField() {
			key, _, _ := strings.Cut(sec.Type.Field(j).Tag.Get("toml"), ",")
			if key != "" && key != "-" {
				out[name] = append(out[name], key)
			}
		}
	}
	return out
}
