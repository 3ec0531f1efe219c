package admin

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// sizeUnits are the byte-size suffixes parseSize accepts, case-insensitively:
// SI (powers of 1000) and IEC (powers of 1024). They are listed largest first
// for formatSize.
var sizeUnits = []struct {
	name string
	mult int64
}{
	{"PiB", 1 << 50}, {"PB", 1e15},
	{"TiB", 1 << 40}, {"TB", 1e12},
	{"GiB", 1 << 30}, {"GB", 1e9},
	{"MiB", 1 << 20}, {"MB", 1e6},
	{"KiB", 1 << 10}, {"KB", 1e3},
	{"B", 1},
}

// maxSizeLen bounds the input of parseSize, and so the work it does.
const maxSizeLen = 40

// parseSize reads a byte count: plain bytes ("1048576") or a number with a
// unit ("16MiB", "500MB", "1.5GiB", "2 kb"). It refuses negatives, fractions
// of a byte and values beyond int64.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty size")
	}
	if len(s) > maxSizeLen {
		return 0, fmt.Errorf("size %.20q...: too long", s)
	}
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	mult := int64(0)
	for _, u := range sizeUnits {
		if strings.EqualFold(unit, u.name) {
			mult = u.mult
		}
	}
	if unit == "" {
		mult = 1
	}
	if mult == 0 {
		return 0, fmt.Errorf("size %q: unknown unit %q (use B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB or PiB)", s, unit)
	}
	if num == "" || strings.Count(num, ".") > 1 || num == "." {
		return 0, fmt.Errorf("size %q: expected a number such as 512, 16MiB or 1.5GB", s)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("size %q: expected a number such as 512, 16MiB or 1.5GB", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("size %q: not a whole number of bytes", s)
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return r.Num().Int64(), nil
}

// formatSize writes n in the shortest exact form parseSize reads back,
// preferring a unit on a tie: "1GiB", "500MB", "1KiB", "1234".
func formatSize(n int64) string {
	plain := strconv.FormatInt(n, 10)
	if n <= 0 {
		return plain
	}
	best := ""
	for _, u := range sizeUnits {
		if u.mult > 1 && n%u.mult == 0 {
			if s := strconv.FormatInt(n/u.mult, 10) + u.name; best == "" || len(s) < len(best) {
				best = s
			}
		}
	}
	if best == "" || len(best) > len(plain) {
		return plain
	}
	return best
}

// sizeFlag is a flag.Value holding a byte count written as parseSize reads it.
type sizeFlag struct{ v *int64 }

func (f sizeFlag) String() string {
	if f.v == nil {
		return "0"
	}
	return formatSize(*f.v)
}

func (f sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*f.v = n
	return nil
}
