package main

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// escaping writes through to w with every control character but the newline (C0, DEL, C1)
// and every bidi control written as a \uXXXX escape. Text from the server is text others may
// have chosen (a rule echoed in an error, a name): printed raw, an escape sequence in it would
// run in the operator's terminal, and a bidi override would make a line read otherwise than it
// is. The escape is JSON's own, so a JSON line stays valid JSON that means the same; the
// Python CLI writes the same escapes.
func escaping(w io.Writer) io.Writer { return escapingWriter{w} }

type escapingWriter struct{ w io.Writer }

func (e escapingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(e.w, printable(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// printable is text with the characters escaping escapes written as \uXXXX; bytes that are
// not UTF-8 (a raw C1 byte is one) become \ufffd.
func printable(text string) string {
	var out strings.Builder
	out.Grow(len(text))
	for len(text) > 0 {
		r, size := utf8.DecodeRuneInString(text)
		switch {
		case r == utf8.RuneError && size == 1:
			out.WriteString(`\ufffd`)
		case unsafeRune(r):
			fmt.Fprintf(&out, `\u%04x`, r)
		default:
			out.WriteString(text[:size])
		}
		text = text[size:]
	}
	return out.String()
}

func unsafeRune(r rune) bool {
	switch {
	case r == '\n':
		return false
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}
