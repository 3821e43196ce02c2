package paths

import "testing"

func TestLayout(t *testing.T) {
	t.Setenv(EnvRoot, "/tmp/x/")
	l := FromEnv()
	cases := map[string]string{
		l.GlobalConf():    "/tmp/x/etc/pkcshsm/pkcshsm.conf",
		l.TokenDir("cca"): "/tmp/x/var/lib/pkcshsm/tokens/cca",
		l.MKChangeDir():   "/tmp/x/var/lib/pkcshsm/HSM_MK_CHANGE",
		l.SimSysfs():      "/tmp/x/var/lib/pkcshsm/sim/sys",
		l.AppSocket():     "/tmp/x/run/pkcshsm/app.sock",
		l.AdminSocket():   "/tmp/x/run/pkcshsm/admin.sock",
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	t.Setenv(EnvRoot, "")
	if got := FromEnv().MKChangeDir(); got != "/var/lib/pkcshsm/HSM_MK_CHANGE" {
		t.Errorf("default root: got %q", got)
	}
	if got := (Layout{}).ConfDir(); got != "/etc/pkcshsm" {
		t.Errorf("zero layout: got %q", got)
	}
}
