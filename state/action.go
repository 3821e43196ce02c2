package state

import (
	"fmt"
	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/mkvp"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// Action is one of the three things an operation does to key objects.
type Action uint8

// Actions.
const (
	// ActReencipher adds CKA_IBM_OPAQUE_REENC, the key under the new master
	// key, to every affected key object.
	ActReencipher Action = iota + 1
	// ActFinalize moves CKA_IBM_OPAQUE to CKA_IBM_OPAQUE_OLD and
	// CKA_IBM_OPAQUE_REENC to CKA_IBM_OPAQUE.
	ActFinalize
	// ActCancel drops CKA_IBM_OPAQUE_REENC.
	ActCancel
)

// String is the verb: "reencipher", "finalize", "cancel".
func (a Action) String() string {
	switch a {
	case ActReencipher:
		return "reencipher"
	case ActFinalize:
		return "finalize"
	case ActCancel:
		return "cancel"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// EventType is the runtime event type that carries the action to every
// process: "mkchange.reencipher", "mkchange.finalize", "mkchange.cancel".
// The event's operation id names the operation file, which holds the rest.
func (a Action) EventType() string { return "mkchange." + a.String() }

// ParseEventType is the inverse of EventType.
func ParseEventType(s string) (Action, error) {
	for _, a := range []Action{ActReencipher, ActFinalize, ActCancel} {
		if a.EventType() == s {
			return a, nil
		}
	}
	return 0, errclass.New(errclass.InvalidArgument, "unknown master key change event type %q", s)
}

// CensusEventType is the event `pkcshsm_mk_change verify` sends to every
// process: count the session keys that have no blob under the new master
// keys. Its payload is [CensusRequest] as JSON; it changes nothing. Each
// process answers per token with the keys concerned (Objects) and those
// missing a blob under the new pattern (ObjectsFailed).
const CensusEventType = "mkchange.census"

// CensusRequest is the payload of a census event: the APQNs and the new
// master key patterns whose activation is in question.
type CensusRequest struct {
	APQNs apqn.List                  `json:"apqns"`
	New   map[mkvp.Type]mkvp.Pattern `json:"new"`
}
