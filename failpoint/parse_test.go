package failpoint

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		spec string
		want []Rule
		err  string // substring of the error; "" for success
	}{
		{spec: "", want: nil},
		{spec: " , ,", want: nil},
		{spec: "cli.a", want: []Rule{{Name: "cli.a", Action: Kill}}},
		{spec: "cli.a=kill", want: []Rule{{Name: "cli.a", Action: Kill}}},
		{spec: "cli.a=kill@3", want: []Rule{{Name: "cli.a", Action: Kill, Nth: 3}}},
		{spec: "cli.a=error, daemon.b_c-d=sleep:250ms@2", want: []Rule{
			{Name: "cli.a", Action: Error},
			{Name: "daemon.b_c-d", Action: Sleep, Sleep: 250 * time.Millisecond, Nth: 2},
		}},
		{spec: "cli.after-state-REENCIPHERING=exit:7", want: []Rule{{Name: "cli.after-state-REENCIPHERING", Action: Exit, Status: 7}}},
		{spec: "cli.a=exit:0", want: []Rule{{Name: "cli.a", Action: Exit, Status: 0}}},
		{spec: "mkchange.page-size=value:10", want: []Rule{{Name: "mkchange.page-size", Action: Value, Value: 10}}},
		{spec: "k=value", err: "needs a number"},
		{spec: "k=value:-1", err: "needs a number"},
		{spec: "k=value:x", err: "needs a number"},
		{spec: "k=value:3@2", err: "takes no hit count"},
		{spec: "cli.a=kill,cli.a=error", err: "appears twice"},
		{spec: "=kill", err: "not a failpoint name"},
		{spec: "cli a=kill", err: "not a failpoint name"},
		{spec: ".cli=kill", err: "not a failpoint name"},
		{spec: "cli.=kill", err: "not a failpoint name"},
		{spec: "cli.a=stop", err: "unknown action"},
		{spec: "cli.a=", err: "unknown action"},
		{spec: "cli.a=kill:1", err: "takes no argument"},
		{spec: "cli.a=error:x", err: "takes no argument"},
		{spec: "cli.a=sleep", err: "needs a duration"},
		{spec: "cli.a=sleep:soon", err: "needs a duration"},
		{spec: "cli.a=sleep:-1s", err: "needs a duration"},
		{spec: "cli.a=exit", err: "needs a status"},
		{spec: "cli.a=exit:126", err: "needs a status"},
		{spec: "cli.a=exit:-1", err: "needs a status"},
		{spec: "cli.a=exit:07", err: "needs a status"},
		{spec: "cli.a=kill@0", err: "not a hit count"},
		{spec: "cli.a=kill@", err: "not a hit count"},
		{spec: "cli.a=kill@+2", err: "not a hit count"},
		{spec: "cli.a=kill@2@3", err: "not a hit count"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := Parse(tt.spec)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Parse(%q) = %v, %v; want error containing %q", tt.spec, got, err, tt.err)
				}
				if !strings.Contains(err.Error(), EnvSpec) {
					t.Errorf("error %q does not name %s", err, EnvSpec)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", tt.spec, got, err, tt.want)
			}
		})
	}
}

func TestRuleStringRoundTrip(t *testing.T) {
	for _, r := range []Rule{
		{Name: "cli.a", Action: Kill},
		{Name: "cli.a", Action: Kill, Nth: 12},
		{Name: "agent.b", Action: Error},
		{Name: "daemon.c", Action: Sleep, Sleep: 1500 * time.Millisecond, Nth: 1},
		{Name: "cli.d", Action: Exit, Status: 125},
		{Name: "k", Action: Value, Value: 0},
		{Name: "k", Action: Value, Value: 4000},
	} {
		got, err := Parse(r.String())
		if err != nil || len(got) != 1 || got[0] != r {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", r.String(), got, err, r)
		}
	}
}

// FuzzParse checks that Parse never panics and that every accepted rule
// formats to a spec that parses back to the same rule.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"cli.a", "cli.a=kill@2", "a=sleep:1s,b=exit:3", "x=error", "a=,b", "a=sleep:1h2m3.5s@99"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		rules, err := Parse(spec)
		if err != nil {
			return
		}
		for _, r := range rules {
			if !ValidName(r.Name) {
				t.Fatalf("accepted invalid name %q", r.Name)
			}
			back, err := Parse(r.String())
			if err != nil || len(back) != 1 || back[0] != r {
				t.Fatalf("%q: rule %+v formats as %q, which parses as %+v, %v", spec, r, r.String(), back, err)
			}
		}
	})
}
