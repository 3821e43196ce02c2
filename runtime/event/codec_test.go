package event

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

func seeds(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("../../testdata/event/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no seed frames in testdata/event (err %v)", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = bytes.TrimSpace(b)
	}
	return out
}

func frame(body []byte) []byte {
	out := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(out, uint32(len(body)))
	copy(out[4:], body)
	return out
}

func TestSeedsDecode(t *testing.T) {
	for name, body := range seeds(t) {
		t.Run(name, func(t *testing.T) {
			m, err := Decode(body)
			if strings.HasPrefix(name, "bad-") {
				if err == nil {
					t.Fatalf("Decode accepted %s", body)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if string(m.Kind)+".json" != name {
				t.Errorf("kind %q from %s", m.Kind, name)
			}
			again, err := Encode(m)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if !bytes.Equal(again, body) {
				t.Errorf("round trip changed the frame:\n got %s\nwant %s", again, body)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	ok := `{"v":2,"kind":"status_request","status_request":{}}`
	tests := []struct {
		name, body string
		class      errclass.Class
		want       string
	}{
		{"garbage", "\x00\xffnot json", errclass.InvalidArgument, "malformed frame"},
		{"trailing", ok + `{}`, errclass.InvalidArgument, "trailing data"},
		{"wrong version", `{"v":9,"kind":"status_request","status_request":{}}`, errclass.FailedPrecondition, "protocol version 9"},
		{"no version", `{"kind":"status_request","status_request":{}}`, errclass.FailedPrecondition, "protocol version 0"},
		{"unknown kind", `{"v":2,"kind":"reboot"}`, errclass.InvalidArgument, `unknown message kind "reboot"`},
		{"unknown field", `{"v":2,"kind":"status_request","status_request":{},"x":1}`, errclass.InvalidArgument, "unknown field"},
		{"missing body", `{"v":2,"kind":"hello"}`, errclass.InvalidArgument, "without its body"},
		{"two bodies", `{"v":2,"kind":"status_request","status_request":{},"status":{"pid":1,"pending":0}}`, errclass.InvalidArgument, "carries a status body"},
		{"hello pid zero", `{"v":2,"kind":"hello","hello":{"pid":0,"uid":0,"program":"p"}}`, errclass.InvalidArgument, "pid 0 out of range"},
		{"hello no program", `{"v":2,"kind":"hello","hello":{"pid":5,"uid":0,"program":""}}`, errclass.InvalidArgument, "program is empty"},
		{"bad token type", `{"v":2,"kind":"hello","hello":{"pid":5,"uid":0,"program":"p","tokens":[{"slot":1,"label":"","serial":"s","type":"soft"}]}}`, errclass.InvalidArgument, `type "soft"`},
		{"long label", `{"v":2,"kind":"hello","hello":{"pid":5,"uid":0,"program":"p","tokens":[{"slot":1,"label":"` + strings.Repeat("x", 33) + `","serial":"s","type":"cca"}]}}`, errclass.InvalidArgument, "token label is 33 bytes"},
		{"event without id", `{"v":2,"kind":"event","event":{"type":"t","timeout_ms":1000}}`, errclass.InvalidArgument, "event id is empty"},
		{"event without timeout", `{"v":2,"kind":"event","event":{"id":"e","type":"t"}}`, errclass.InvalidArgument, "no timeout"},
		{"event negative timeout", `{"v":2,"kind":"event","event":{"id":"e","type":"t","timeout_ms":-5}}`, errclass.InvalidArgument, "timeout -5 ms out of range"},
		{"broadcast timeout over a day", `{"v":2,"kind":"broadcast","broadcast":{"event":{"type":"t","timeout_ms":86400001}}}`, errclass.InvalidArgument, "out of range"},
		{"version 1 (wall-clock deadlines)", `{"v":1,"kind":"status_request","status_request":{}}`, errclass.FailedPrecondition, "protocol version 1"},
		{"account negative timeout", `{"v":2,"kind":"account","account":{"event_id":"e","type":"t","timeout_ms":-1}}`, errclass.InvalidArgument, "out of range"},
		{"broadcast without type", `{"v":2,"kind":"broadcast","broadcast":{"event":{}}}`, errclass.InvalidArgument, "event type is empty"},
		{"target pid negative", `{"v":2,"kind":"broadcast","broadcast":{"event":{"type":"t","target":{"pids":[-1]}}}}`, errclass.InvalidArgument, "target pid -1"},
		{"reply bad outcome", `{"v":2,"kind":"reply","reply":{"event_id":"e","tokens":[{"slot":1,"serial":"s","outcome":"maybe"}]}}`, errclass.InvalidArgument, `outcome "maybe"`},
		{"reply bad class", `{"v":2,"kind":"reply","reply":{"event_id":"e","tokens":[{"slot":1,"serial":"s","outcome":"failed","class":200}]}}`, errclass.InvalidArgument, "unknown error class 200"},
		{"reply negative count", `{"v":2,"kind":"reply","reply":{"event_id":"e","tokens":[{"slot":1,"serial":"s","outcome":"affected","objects":-1}]}}`, errclass.InvalidArgument, "negative object count"},
		{"account bad outcome", `{"v":2,"kind":"account","account":{"event_id":"e","type":"t","processes":[{"pid":1,"uid":0,"program":"p","outcome":"lost"}]}}`, errclass.InvalidArgument, `outcome "lost"`},
		{"target token without serial", `{"v":2,"kind":"broadcast","broadcast":{"event":{"type":"t","target":{"tokens":[{"serial":"","label":"l"}]}}}}`, errclass.InvalidArgument, "target token serial is empty"},
		{"target token long label", `{"v":2,"kind":"broadcast","broadcast":{"event":{"type":"t","target":{"tokens":[{"serial":"s","label":"` + strings.Repeat("x", 33) + `"}]}}}}`, errclass.InvalidArgument, "target token label is 33 bytes"},
		{"account long command", `{"v":2,"kind":"account","account":{"event_id":"e","type":"t","processes":[{"pid":1,"uid":0,"program":"p","command":"` + strings.Repeat("c", 257) + `","outcome":"replied"}]}}`, errclass.InvalidArgument, "command is 257 bytes"},
		{"error without message", `{"v":2,"kind":"error","error":{"class":1,"message":""}}`, errclass.InvalidArgument, "error message is empty"},
		{"null", `null`, errclass.FailedPrecondition, "protocol version 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode([]byte(tt.body))
			if err == nil {
				t.Fatalf("Decode accepted %s", tt.body)
			}
			if got := errclass.Of(err); got != tt.class {
				t.Errorf("class %v, want %v (%v)", got, tt.class, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if m.Kind != "" || m.V != 0 {
				t.Errorf("failed decode returned a non-zero message %+v", m)
			}
		})
	}
}

func TestReadMessageFrames(t *testing.T) {
	good := []byte(`{"v":2,"kind":"status_request","status_request":{}}`)
	huge := make([]byte, 4)
	binary.BigEndian.PutUint32(huge, MaxFrame+1)
	tests := []struct {
		name  string
		input []byte
		want  string // "" means success
		eof   bool
	}{
		{"good", frame(good), "", false},
		{"clean eof", nil, "", true},
		{"short header", []byte{0, 0}, "after 2 of 4 length bytes", false},
		{"empty frame", []byte{0, 0, 0, 0}, "empty frame", false},
		{"oversized", append(huge, good...), "exceeds the limit", false},
		{"truncated body", frame(good)[:20], "after 16 of", false},
		{"garbage body", frame([]byte("\x01\x02\x03")), "malformed frame", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ReadMessage(bytes.NewReader(tt.input))
			switch {
			case tt.eof:
				if err != io.EOF {
					t.Fatalf("err %v, want io.EOF", err)
				}
			case tt.want == "":
				if err != nil || m.Kind != KindStatusRequest {
					t.Fatalf("ReadMessage = %+v, %v", m, err)
				}
			default:
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err %v, want it to mention %q", err, tt.want)
				}
				if !errors.Is(err, errclass.InvalidArgument) {
					t.Errorf("err %v is not InvalidArgument", err)
				}
			}
		})
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	msgs := []Message{
		Wrap(&Hello{PID: 9, UID: 1, Program: "app", Tokens: []Token{{Slot: 2, Label: "l", Serial: "S", Type: EP11}}}),
		Wrap(&Event{ID: "e1", Type: "t", Payload: []byte{0, 1, 2}, Timeout: 1500, Target: &Target{PIDs: []int32{9}}}),
		Wrap(&Reply{EventID: "e1", Tokens: []TokenResult{{Slot: 2, Serial: "S", Result: Affected, Objects: 4}}}),
		Wrap(&Error{Class: errclass.PermissionDenied, Message: "no", Hint: "ask"}),
	}
	var buf bytes.Buffer
	for _, m := range msgs {
		if err := WriteMessage(&buf, m); err != nil {
			t.Fatalf("WriteMessage(%s): %v", m.Kind, err)
		}
	}
	for _, want := range msgs {
		got, err := ReadMessage(&buf)
		if err != nil {
			t.Fatalf("ReadMessage: %v", err)
		}
		a, _ := Encode(got)
		b, _ := Encode(want)
		if !bytes.Equal(a, b) {
			t.Errorf("got %s, want %s", a, b)
		}
	}
	if _, err := ReadMessage(&buf); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
}

func TestEncodeRefusesInvalid(t *testing.T) {
	var buf bytes.Buffer
	err := WriteMessage(&buf, Wrap(&Hello{PID: -3, Program: "x"}))
	if !errors.Is(err, errclass.InvalidArgument) {
		t.Fatalf("err %v, want InvalidArgument", err)
	}
	if buf.Len() != 0 {
		t.Errorf("an invalid message wrote %d bytes", buf.Len())
	}
	big := Wrap(&Event{ID: "e", Type: "t", Timeout: 1, Payload: make([]byte, MaxPayload+1)})
	if _, err := Encode(big); err == nil || !strings.Contains(err.Error(), "payload of") {
		t.Errorf("oversized payload: %v", err)
	}
}

func TestErrorCarriesClass(t *testing.T) {
	orig := errclass.Newh(errclass.PermissionDenied, "join group x", "uid %d refused", 7)
	wire := ErrorFrom(orig)
	var buf bytes.Buffer
	if err := WriteMessage(&buf, Wrap(wire)); err != nil {
		t.Fatal(err)
	}
	m, err := ReadMessage(&buf)
	if err != nil {
		t.Fatal(err)
	}
	got := m.Error.Err()
	if !errors.Is(got, errclass.PermissionDenied) || errclass.Hint(got) != "join group x" ||
		!strings.Contains(got.Error(), "uid 7 refused") {
		t.Errorf("got %v (class %v, hint %q)", got, errclass.Of(got), errclass.Hint(got))
	}
}

func TestTargetMatching(t *testing.T) {
	cca := Token{Slot: 1, Serial: "C1", Type: CCA}
	ep := Token{Slot: 2, Serial: "E1", Label: "ep", Type: EP11}
	tests := []struct {
		name   string
		target *Target
		pid    int32
		tokens []Token
		want   bool
	}{
		{"nil", nil, 5, nil, true},
		{"zero", &Target{}, 5, nil, true},
		{"pid selected", &Target{PIDs: []int32{5}}, 5, nil, true},
		{"pid not selected", &Target{PIDs: []int32{6}}, 5, nil, false},
		{"excluded", &Target{ExcludePIDs: []int32{5}}, 5, nil, false},
		{"type match", &Target{Types: []TokenType{EP11}}, 5, []Token{cca, ep}, true},
		{"type miss", &Target{Types: []TokenType{EP11}}, 5, []Token{cca}, false},
		{"no tokens with type filter", &Target{Types: []TokenType{CCA}}, 5, nil, false},
		{"serial match", &Target{Serials: []string{"C1"}}, 5, []Token{cca, ep}, true},
		{"serial and type disagree", &Target{Serials: []string{"C1"}, Types: []TokenType{EP11}}, 5, []Token{cca, ep}, false},
		{"token serial and label", &Target{Tokens: []TokenID{{Serial: "E1", Label: "ep"}}}, 5, []Token{cca, ep}, true},
		{"token label padded", &Target{Tokens: []TokenID{{Serial: "E1", Label: "ep   "}}}, 5, []Token{ep}, true},
		{"token serial padded", &Target{Tokens: []TokenID{{Serial: "E1      ", Label: "ep"}}}, 5, []Token{ep}, true},
		{"real serial, made-up label", &Target{Tokens: []TokenID{{Serial: "E1", Label: "other"}}}, 5, []Token{cca, ep}, false},
		{"made-up serial, real label", &Target{Tokens: []TokenID{{Serial: "E2", Label: "ep"}}}, 5, []Token{ep}, false},
		{"no claims", &Target{Tokens: []TokenID{{Serial: "E1", Label: "ep"}}}, 5, nil, false},
		{"token and type disagree", &Target{Tokens: []TokenID{{Serial: "E1", Label: "ep"}}, Types: []TokenType{CCA}}, 5, []Token{cca, ep}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.target.MatchProcess(tt.pid, tt.tokens); got != tt.want {
				t.Errorf("MatchProcess = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestProcessWho(t *testing.T) {
	for _, tt := range []struct {
		p    ProcessResult
		want string
	}{
		{ProcessResult{PID: 7, Program: "p11load", Command: "p11load"}, "process 7 (p11load)"},
		{ProcessResult{PID: 7, Program: "p11load"}, "process 7 (p11load)"},
		{ProcessResult{PID: 7, Program: "application-with-a-long-name", Command: "application-wit"}, "process 7 (application-with-a-long-name)"},
		{ProcessResult{PID: 7, Program: "p11load", Command: "python3"}, "process 7 (p11load, running python3)"},
	} {
		if got := tt.p.Who(); got != tt.want {
			t.Errorf("Who(%+v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestAccountTallyAndErr(t *testing.T) {
	a := Account{EventID: "e", Type: "t", Processes: []ProcessResult{
		{PID: 1, Program: "a", Outcome: Replied, Results: []TokenResult{{Serial: "S", Result: Affected}, {Serial: "T", Result: NotAffected}}},
		{PID: 2, Program: "b", Outcome: TimedOut},
		{PID: 3, Program: "c", Outcome: Disconnected},
		{PID: 4, Program: "d", Outcome: Replied, Results: []TokenResult{{Serial: "U", Result: Failed, Error: "boom", Class: errclass.DataLoss}}},
	}}
	got := a.Tally()
	want := Tally{Processes: 4, Replied: 2, TimedOut: 1, Disconnected: 1, Affected: 1, NotAffected: 1, Failed: 1}
	if got != want {
		t.Errorf("Tally = %+v, want %+v", got, want)
	}
	err := a.Err()
	if !errors.Is(err, errclass.DeadlineExceeded) || !errors.Is(err, errclass.DataLoss) {
		t.Errorf("Err() = %v, want it to carry DeadlineExceeded and DataLoss", err)
	}
	for _, s := range []string{"process 2 (b) did not answer", "process 3 (c) disconnected", "token U in slot 0: boom"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("Err() = %q, want it to mention %q", err, s)
		}
	}
	clean := Account{EventID: "e", Processes: []ProcessResult{{PID: 1, Outcome: Replied}}}
	if err := clean.Err(); err != nil {
		t.Errorf("clean account: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, body := range seeds(f) {
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Decode(body)
		if err != nil {
			if m.Kind != "" || m.V != 0 {
				t.Fatalf("failed decode returned %+v", m)
			}
			return
		}
		enc, err := Encode(m)
		if err != nil {
			t.Fatalf("Encode of a decoded message failed: %v", err)
		}
		m2, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode of an encoded message failed: %v\n%s", err, enc)
		}
		enc2, err := Encode(m2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("decode→encode not stable:\n%s\n%s", enc, enc2)
		}
	})
}

func FuzzReadMessage(f *testing.F) {
	for _, body := range seeds(f) {
		f.Add(frame(body))
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, input []byte) {
		r := bytes.NewReader(input)
		for range 8 {
			if _, err := ReadMessage(r); err != nil {
				return
			}
		}
	})
}
