package apqn

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// Mode is what a card does, from the last letter of its type ("CEX8C").
type Mode uint8

// Card modes.
const (
	ModeUnknown Mode = iota
	ModeCCA          // CEXnC: CCA coprocessor
	ModeEP11         // CEXnP: EP11 coprocessor
	ModeAccel        // CEXnA: accelerator (no master keys)
)

// String returns the mode as lszcrypt prints it.
func (m Mode) String() string {
	switch m {
	case ModeCCA:
		return "CCA-Coproc"
	case ModeEP11:
		return "EP11-Coproc"
	case ModeAccel:
		return "Accelerator"
	}
	return "Unknown"
}

// ParseCardType reads a card type such as "CEX8C" into its generation and
// mode. Unknown suffixes give ModeUnknown without error, as lszcrypt does.
func ParseCardType(s string) (gen int, mode Mode, err error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "CEX")
	if !ok || len(rest) < 2 {
		return 0, ModeUnknown, errclass.New(errclass.InvalidArgument,
			"card type %q: want CEX<generation><A|C|P>, e.g. CEX8C", s)
	}
	gen, err = strconv.Atoi(rest[:len(rest)-1])
	if err != nil || gen <= 0 {
		return 0, ModeUnknown, errclass.New(errclass.InvalidArgument,
			"card type %q: generation %q is not a positive number", s, rest[:len(rest)-1])
	}
	switch rest[len(rest)-1] {
	case 'C':
		mode = ModeCCA
	case 'P':
		mode = ModeEP11
	case 'A':
		mode = ModeAccel
	}
	return gen, mode, nil
}

// Card is one crypto adapter as sysfs shows it.
type Card struct {
	Number     uint8
	Type       string // e.g. "CEX8C"
	Generation int
	Mode       Mode
	Online     bool
	Config     bool // true where the attribute is absent (older kernels)
	Chkstop    bool // false where the attribute is absent
	Functions  uint32
	Serial     string
}

// Usable reports whether the card is online, configured and not checkstopped.
func (c Card) Usable() bool { return c.Online && c.Config && !c.Chkstop }

// Queue is one APQN as sysfs shows it, with its card.
type Queue struct {
	ID      ID
	Card    Card
	Online  bool
	Config  bool
	Chkstop bool
}

// Usable reports whether the queue and its card can take requests.
func (q Queue) Usable() bool { return q.Card.Usable() && q.Online && q.Config && !q.Chkstop }

// Status returns the lszcrypt status word.
func (q Queue) Status() string {
	switch {
	case q.Chkstop || q.Card.Chkstop:
		return "chkstop"
	case !q.Config || !q.Card.Config:
		return "deconfig"
	case !q.Online || !q.Card.Online:
		return "offline"
	}
	return "online"
}

// Bus reads the AP bus below a sysfs root ("/sys" on real hardware).
type Bus struct {
	Root string
}

// apDir is where the kernel keeps the AP devices themselves; the entries in
// bus/ap/devices are links to them.
func (b Bus) apDir() string { return filepath.Join(b.Root, "devices", "ap") }

// CardDir returns the sysfs directory of a card.
func (b Bus) CardDir(card uint8) string {
	return filepath.Join(b.apDir(), fmt.Sprintf("card%02x", card))
}

// QueueDir returns the sysfs directory of a queue.
func (b Bus) QueueDir(id ID) string { return filepath.Join(b.CardDir(id.Card), id.SysfsName()) }

// Cards lists the cards in ascending order.
func (b Bus) Cards() ([]Card, error) {
	ents, err := os.ReadDir(b.apDir())
	if err != nil {
		return nil, errclass.FS(err, "read AP bus at %s", b.apDir())
	}
	var cards []Card
	for _, e := range ents {
		n, ok := cardNumber(e.Name())
		if !ok {
			continue
		}
		c, err := b.Card(n)
		if err != nil {
			return nil, err
		}
		cards = append(cards, c)
	}
	slices.SortFunc(cards, func(a, c Card) int { return int(a.Number) - int(c.Number) })
	return cards, nil
}

func cardNumber(name string) (uint8, bool) {
	h, ok := strings.CutPrefix(name, "card")
	if !ok || len(h) != 2 {
		return 0, false
	}
	v, err := strconv.ParseUint(h, 16, 8)
	return uint8(v), err == nil
}

// Card reads one card's attributes.
func (b Bus) Card(n uint8) (Card, error) {
	dir := b.CardDir(n)
	typ, err := readAttr(dir, "type")
	if err != nil {
		return Card{}, err
	}
	c := Card{Number: n, Type: typ}
	c.Generation, c.Mode, err = ParseCardType(typ)
	if err != nil {
		return Card{}, fmt.Errorf("%s: %w", dir, err)
	}
	if c.Online, err = readBool(dir, "online", false); err != nil {
		return Card{}, err
	}
	if c.Config, err = readBool(dir, "config", true); err != nil {
		return Card{}, err
	}
	if c.Chkstop, err = readBool(dir, "chkstop", false); err != nil {
		return Card{}, err
	}
	if f, err := readAttr(dir, "ap_functions"); err == nil {
		v, perr := strconv.ParseUint(strings.TrimPrefix(f, "0x"), 16, 32)
		if perr != nil {
			return Card{}, errclass.New(errclass.DataLoss, "%s/ap_functions: %q is not a hex mask", dir, f)
		}
		c.Functions = uint32(v)
	} else if !errors.Is(err, errclass.NotFound) {
		return Card{}, err
	}
	if s, err := readAttr(dir, "serialnr"); err == nil {
		c.Serial = s
	} else if !errors.Is(err, errclass.NotFound) {
		return Card{}, err
	}
	return c, nil
}

// Queues lists every queue of every card in ascending order.
func (b Bus) Queues() ([]Queue, error) {
	cards, err := b.Cards()
	if err != nil {
		return nil, err
	}
	var qs []Queue
	for _, c := range cards {
		ents, err := os.ReadDir(b.CardDir(c.Number))
		if err != nil {
			return nil, errclass.FS(err, "read card %02x", c.Number)
		}
		for _, e := range ents {
			id, err := Parse(e.Name())
			if err != nil || id.Card != c.Number || e.Name() != id.SysfsName() {
				continue // attributes and other entries
			}
			q, err := b.queue(c, id)
			if err != nil {
				return nil, err
			}
			qs = append(qs, q)
		}
	}
	slices.SortFunc(qs, func(a, c Queue) int { return a.ID.Compare(c.ID) })
	return qs, nil
}

// Queue reads one queue and its card.
func (b Bus) Queue(id ID) (Queue, error) {
	c, err := b.Card(id.Card)
	if err != nil {
		return Queue{}, err
	}
	return b.queue(c, id)
}

func (b Bus) queue(c Card, id ID) (Queue, error) {
	dir := b.QueueDir(id)
	q := Queue{ID: id, Card: c}
	var err error
	if q.Online, err = readBool(dir, "online", false); err != nil {
		return Queue{}, err
	}
	if q.Config, err = readBool(dir, "config", true); err != nil {
		return Queue{}, err
	}
	if q.Chkstop, err = readBool(dir, "chkstop", false); err != nil {
		return Queue{}, err
	}
	return q, nil
}

// MKVPs reads and parses a queue's mkvps attribute.
func (b Bus) MKVPs(id ID) (MKVPs, error) {
	path := filepath.Join(b.QueueDir(id), "mkvps")
	raw, err := os.ReadFile(path)
	if err != nil {
		return MKVPs{}, errclass.FS(err, "read %s", path)
	}
	m, err := ParseMKVPs(raw)
	if err != nil {
		return MKVPs{}, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func readAttr(dir, name string) (string, error) {
	path := filepath.Join(dir, name)
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", errclass.FS(err, "read %s", path)
	}
	return strings.TrimSpace(string(raw)), nil
}

// readBool reads a 0/1 attribute; def is used where the attribute is absent.
func readBool(dir, name string, def bool) (bool, error) {
	s, err := readAttr(dir, name)
	if errors.Is(err, errclass.NotFound) {
		return def, nil
	}
	if err != nil {
		return false, err
	}
	v, perr := strconv.Atoi(s)
	if perr != nil {
		return false, errclass.New(errclass.DataLoss, "%s/%s: %q is not a number", dir, name, s)
	}
	return v != 0, nil
}
