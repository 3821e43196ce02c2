package errclass

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
)

func TestOfAndIs(t *testing.T) {
	base := New(NotFound, "operation %q not found", "abc123")
	wrapped := fmt.Errorf("failed to load operation: %w", base)
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, Unknown},
		{"plain", errors.New("x"), Unknown},
		{"direct", base, NotFound},
		{"wrapped", wrapped, NotFound},
		{"sentinel", Conflict, Conflict},
		{"wrapped sentinel", fmt.Errorf("ctx: %w", Unavailable), Unavailable},
		{"reclassified", As(DataLoss, wrapped), DataLoss},
		{"outer wins", New(Aborted, "rolled back: %w", base), Aborted},
		{"join", errors.Join(errors.New("a"), base), NotFound},
		{"classifier", fmt.Errorf("ctx: %w", structured{}), Conflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Of(tt.err); got != tt.want {
				t.Fatalf("Of = %v, want %v", got, tt.want)
			}
			if tt.want != Unknown && !errors.Is(tt.err, tt.want) {
				t.Fatalf("errors.Is(err, %v) = false", tt.want)
			}
		})
	}
	if errors.Is(wrapped, Conflict) {
		t.Fatal("not-found error matched Conflict")
	}
}

func TestMessageAndHint(t *testing.T) {
	err := Newh(InvalidArgument, "use the form card.domain, e.g. 0a.0024", "invalid APQN %q", "zz")
	err = fmt.Errorf("option -a/--apqns: %w", err)
	if got, want := err.Error(), `option -a/--apqns: invalid APQN "zz"`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if got := Hint(err); got != "use the form card.domain, e.g. 0a.0024" {
		t.Fatalf("Hint = %q", got)
	}
	outer := WithHint(err, "outer hint")
	if Hint(outer) != "outer hint" || Of(outer) != InvalidArgument {
		t.Fatalf("WithHint lost hint or class: %q %v", Hint(outer), Of(outer))
	}
	if WithHint(nil, "x") != nil || As(Internal, nil) != nil {
		t.Fatal("nil error did not stay nil")
	}
}

func TestClassNames(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Classes() {
		if !c.Valid() || seen[c.String()] {
			t.Fatalf("class %d invalid or duplicate name %q", c, c)
		}
		seen[c.String()] = true
	}
	if Class(200).Valid() || Class(200).String() != "class(200)" {
		t.Fatal("out of range class")
	}
}

type structured struct{}

func (structured) Error() string   { return "two operations intersect" }
func (structured) ErrClass() Class { return Conflict }
func (structured) Is(t error) bool { return t == Conflict }

func TestFS(t *testing.T) {
	cases := []struct {
		err  error
		want Class
	}{
		{fs.ErrNotExist, NotFound},
		{&fs.PathError{Op: "open", Path: "/x", Err: fs.ErrPermission}, PermissionDenied},
		{errors.New("disk on fire"), Unavailable},
	}
	for _, tt := range cases {
		err := FS(tt.err, "read %s", "/x")
		if Of(err) != tt.want || !errors.Is(err, tt.err) || !strings.HasPrefix(err.Error(), "failed to read /x: ") {
			t.Errorf("FS(%v) = %v (class %v), want %v", tt.err, err, Of(err), tt.want)
		}
	}
	if FS(nil, "x") != nil {
		t.Error("FS(nil) != nil")
	}
}
