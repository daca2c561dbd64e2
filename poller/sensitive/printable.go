package sensitive

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Printable refuses a setting with a control character, an invisible one
// (a line or paragraph separator…) or invalid UTF-8: no setting needs one,
// and YAML does not carry some of them through a re-marshal. The error
// never quotes the value: it may be a URL with a password.
func Printable(v string) error {
	if !utf8.ValidString(v) {
		return errors.New("not valid UTF-8")
	}
	for i, r := range v {
		if r != ' ' && !unicode.IsPrint(r) {
			return fmt.Errorf("control or invisible character %U at byte %d", r, i)
		}
	}
	return nil
}
