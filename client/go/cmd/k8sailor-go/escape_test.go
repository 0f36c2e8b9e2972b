package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
)

func TestEscapingWritesNoControlOrBidiCharacter(t *testing.T) {
	var out bytes.Buffer
	w := escaping(&out)
	fmt.Fprintln(w, "web  \x1b]0;owned\x07 \u202e8088 \x7f\u0085 tab\there é")
	want := `web  \u001b]0;owned\u0007 \u202e8088 \u007f\u0085 tab\u0009here é` + "\n"
	if out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
}

func TestEscapingKeepsJSONValidAndMeaningTheSame(t *testing.T) {
	var out bytes.Buffer
	fmt.Fprint(escaping(&out), "{\"rule\":\"\u202e\x7f\"}")
	var got map[string]string
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["rule"] != "\u202e\x7f" || bytes.ContainsAny(out.Bytes(), "\x7f\u202e") {
		t.Errorf("got %q from %q", got["rule"], out.String())
	}
}
