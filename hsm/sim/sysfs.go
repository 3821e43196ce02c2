package sim

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// The sysfs view mirrors what the kernel's zcrypt driver shows, below
// <dir>/sys:
//
//	devices/ap/cardXX/{type,online,config,chkstop,serialnr,ap_functions}
//	devices/ap/cardXX/XX.YYYY/{online,config,chkstop,mkvps}
//	bus/ap/devices/cardXX  -> ../../../devices/ap/cardXX
//	bus/ap/devices/XX.YYYY -> ../../../devices/ap/cardXX/XX.YYYY
//
// It is rendered by every writer under the state lock, each file replaced
// atomically, so a reader sees for every attribute either the old or the
// new content. The view is derived data: the state file is the truth.

// ap_functions masks as lszcrypt interprets them.
const (
	funcCCA  = 0x10000000
	funcEP11 = 0x04000000
)

func boolAttr(b bool) string {
	if b {
		return "1\n"
	}
	return "0\n"
}

// renderSysfs brings the view below sys in line with s.
func renderSysfs(sys string, s *stateFile) error {
	bus := apqn.Bus{Root: sys}
	links := filepath.Join(sys, "bus", "ap", "devices")
	if err := os.MkdirAll(links, 0o755); err != nil {
		return ioErr(err, "create %s", links)
	}
	cards := map[uint8]bool{}
	for i := range s.Queues {
		q := &s.Queues[i]
		cdir := bus.CardDir(q.ID.Card)
		if !cards[q.ID.Card] {
			cards[q.ID.Card] = true
			if err := os.MkdirAll(cdir, 0o755); err != nil {
				return ioErr(err, "create %s", cdir)
			}
			serial, fn := fmt.Sprintf("93AAC%03X\n", q.ID.Card), funcCCA
			if apqn.Mode(q.Mode) == apqn.ModeEP11 {
				serial, fn = fmt.Sprintf("93AAP%011X\n", q.ID.Card), funcEP11
			}
			attrs := map[string]string{
				"type": q.CardType + "\n", "online": "1\n", "config": "1\n", "chkstop": "0\n",
				"serialnr": serial, "ap_functions": fmt.Sprintf("0x%08X\n", fn),
			}
			if err := writeAttrs(cdir, attrs); err != nil {
				return err
			}
			if err := ensureLink(filepath.Join(links, q.ID.CardName()),
				filepath.Join("..", "..", "..", "devices", "ap", q.ID.CardName())); err != nil {
				return err
			}
		}
		qdir := bus.QueueDir(q.ID)
		if err := os.MkdirAll(qdir, 0o755); err != nil {
			return ioErr(err, "create %s", qdir)
		}
		mk, err := mkvpsText(q)
		if err != nil {
			return err
		}
		attrs := map[string]string{
			"online": boolAttr(q.Online), "config": "1\n", "chkstop": boolAttr(q.Chkstop), "mkvps": string(mk),
		}
		if err := writeAttrs(qdir, attrs); err != nil {
			return err
		}
		if err := ensureLink(filepath.Join(links, q.ID.SysfsName()),
			filepath.Join("..", "..", "..", "devices", "ap", q.ID.CardName(), q.ID.SysfsName())); err != nil {
			return err
		}
	}
	return nil
}

// writeAttrs replaces the attribute files whose content differs.
func writeAttrs(dir string, attrs map[string]string) error {
	for name, content := range attrs {
		path := filepath.Join(dir, name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, []byte(content)) {
			continue
		}
		if err := writeFileAtomic(path, []byte(content), 0o444, false); err != nil {
			return err
		}
	}
	return nil
}

func ensureLink(path, target string) error {
	if cur, err := os.Readlink(path); err == nil && cur == target {
		return nil
	}
	_ = os.Remove(path)
	if err := os.Symlink(target, path); err != nil {
		return ioErr(err, "link %s", path)
	}
	return nil
}

// mkvpsText renders the mkvps attribute of one queue: CCA the AES, APKA and
// ASYM triples (NEW, CUR, OLD), EP11 WK CUR then NEW. A queue that is
// offline or checkstopped prints "- -" for every line, as the kernel does
// when the query fails.
func mkvpsText(q *queueState) ([]byte, error) {
	var m apqn.MKVPs
	usable := q.Online && !q.Chkstop
	line := func(t mkvp.Type, reg string, r register, printLen int, nilWhenEmpty bool) {
		l := apqn.MKVPLine{Key: t.Keyword(), Register: reg}
		if usable {
			l.State = r.State.st()
			switch {
			case r.State.st() == apqn.StateValid || r.State.st() == apqn.StateFull ||
				r.State.st() == apqn.StateUncommitted || r.State.st() == apqn.StateCommitted:
				l.Pattern = sysfsPattern(t, r.Key)
			case !nilWhenEmpty:
				l.Pattern = make([]byte, printLen)
			}
		}
		m.Lines = append(m.Lines, l)
	}
	if apqn.Mode(q.Mode) == apqn.ModeEP11 {
		r := q.Registers[mkvp.EP11WK]
		line(mkvp.EP11WK, "CUR", r.Current, 32, true)
		line(mkvp.EP11WK, "NEW", r.New, 32, true)
	} else {
		for _, t := range []mkvp.Type{mkvp.CCAAES, mkvp.CCAAPKA, mkvp.CCAASYM} {
			r := q.Registers[t]
			n := 8
			if t == mkvp.CCAASYM {
				n = 16
			}
			line(t, "NEW", r.New, n, false)
			line(t, "CUR", r.Current, n, false)
			line(t, "OLD", r.Old, n, false)
		}
	}
	return m.Format()
}
