package tokenlib

import (
	"bytes"
	"context"
	"errors"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/opbuf"
	"github.com/pkcshsm/pkcshsm/tokenlib/oprules"
)

// Multi-part encryption and decryption with the block mechanisms streams:
// every Update encrypts or decrypts the complete blocks it has (what an
// earlier Update left over plus its part) in one backend call and keeps
// the rest, less than a block, for the next call. CBC carries the last
// ciphertext block forward as the IV of the next call, so the output is
// exactly that of the single-part operation. CBC-PAD decryption also holds
// back the last complete block when nothing follows it yet, because it may
// be the padded one; Final decrypts it and removes the padding. GCM and
// RSA-OAEP keep buffering until Final (the tag and the OAEP block need all
// the data).
//
// Applications depend on this: pkcs11-tool encrypts a file in 1 KiB parts
// and gives C_EncryptFinal a buffer that only has room for the last block.

// blockMode is how a block mechanism streams.
type blockMode struct {
	size  int           // block size in bytes
	mech  hsm.Mechanism // backend mechanism for whole blocks, no padding
	final hsm.Mechanism // backend mechanism for Final's PKCS#7 block (0: no padding)
	chain bool          // CBC: the last ciphertext block is the next IV
}

var blockModes = map[ck.Mechanism]blockMode{
	ck.CKM_AES_ECB:     {16, hsm.MechAESECB, 0, false},
	ck.CKM_AES_CBC:     {16, hsm.MechAESCBC, 0, true},
	ck.CKM_AES_CBC_PAD: {16, hsm.MechAESCBC, hsm.MechAESCBCPad, true},
	ck.CKM_DES3_CBC:    {8, hsm.MechDES3CBC, 0, true},
	ck.CKM_DES3_ECB:    {8, hsm.MechDES3ECB, 0, false},
}

// streams reports whether the multi-part operation streams, and how.
func (op *opState) streams(kind opKind) (blockMode, bool) {
	if kind != opEncrypt && kind != opDecrypt {
		return blockMode{}, false
	}
	bm, ok := blockModes[op.mech.Type]
	return bm, ok
}

// updateLen is the number of bytes an Update with an n-byte part outputs:
// the complete blocks of what is buffered plus the part, less the block
// CBC-PAD decryption holds back.
func (op *opState) updateLen(bm blockMode, decrypt bool, n int) int {
	total := len(op.buf) + n
	keep := total % bm.size
	if decrypt && bm.final != 0 && keep == 0 && total > 0 {
		keep = bm.size
	}
	return total - keep
}

// withUpdate runs a C_EncryptUpdate or C_DecryptUpdate. For the streaming
// mechanisms out follows the convention of withOp: out == nil asks for the
// length and a short out is CKR_BUFFER_TOO_SMALL with it; both leave the
// operation as it was (the length is known without the HSM), so the caller
// calls again with the same part. The other mechanisms buffer and output
// nothing (a length query, out nil, does not take the part either). Any
// other error ends the operation.
func (l *Library) withUpdate(h SessionHandle, kind opKind, data, out []byte) (int, error) {
	s, op, err := l.activeOp(h, kind)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	if err := op.allow(oprules.For(kind, oprules.Update)); err != nil {
		delete(s.ops, kind)
		return 0, err
	}
	op.phase = oprules.Multi
	bm, ok := op.streams(kind)
	n := 0
	if ok {
		n = op.updateLen(bm, kind == opDecrypt, len(data))
	}
	if out == nil {
		return n, nil
	}
	if !ok {
		op.update(data)
		return 0, nil
	}
	if len(out) < n {
		return n, newErr(ck.CKR_BUFFER_TOO_SMALL, errclass.InvalidArgument, "output buffer has %d bytes, %d needed", len(out), n)
	}
	all := data
	if len(op.buf) > 0 {
		all = append(op.buf, data...)
	}
	var res []byte
	if n > 0 {
		res, err = op.cryptBlocks(bm.mech, bm, kind == opDecrypt, all[:n])
		if err != nil {
			delete(s.ops, kind)
			return 0, err
		}
	}
	// data may be the caller's (C) memory: keep a copy of the rest only.
	op.buf = bytes.Clone(all[n:])
	op.total += len(data)
	k := copy(out, res)
	if op.pooled {
		opbuf.Put(res)
		op.pooled = false
	}
	return k, nil
}

// blockFinal is the Final of a streaming operation: the padded last block
// (CBC-PAD encryption), the held-back block without its padding (CBC-PAD
// decryption), or nothing, when the data was a whole number of blocks.
func (op *opState) blockFinal(bm blockMode, decrypt bool) ([]byte, error) {
	switch {
	case bm.final != 0 && !decrypt:
		return op.cryptBlocks(bm.final, bm, false, op.buf)
	case bm.final != 0 && len(op.buf) == bm.size:
		return op.cryptBlocks(bm.final, bm, true, op.buf)
	case len(op.buf) == 0 && !(decrypt && bm.final != 0):
		return []byte{}, nil
	}
	rv := ck.CKR_DATA_LEN_RANGE
	if decrypt {
		rv = ck.CKR_ENCRYPTED_DATA_LEN_RANGE
	}
	if decrypt && bm.final != 0 && op.total == 0 {
		return nil, newErr(rv, errclass.InvalidArgument, "%v: no ciphertext; it is at least one %d-byte block", op.mech.Type, bm.size)
	}
	return nil, newErr(rv, errclass.InvalidArgument, "%v: %d bytes in all is not a multiple of the %d-byte block", op.mech.Type, op.total, bm.size)
}

// cryptBlocks runs one backend call on in with the current chaining IV and
// moves the IV on. The backend mechanism m is bm.mech for whole blocks or
// bm.final for the padded last block.
func (op *opState) cryptBlocks(m hsm.Mechanism, bm blockMode, decrypt bool, in []byte) ([]byte, error) {
	ctx := context.Background()
	p := op.params
	if bm.chain && op.iv != nil {
		p.IV = op.iv
	}
	out, err := op.crypt(ctx, m, p, in, decrypt)
	what := op.mech.Type.String() + " encrypt"
	if decrypt {
		what = op.mech.Type.String() + " decrypt"
		if errors.Is(err, hsm.ErrBadData) {
			return nil, wrapRV(ck.CKR_ENCRYPTED_DATA_INVALID, err, "%s", what)
		}
	}
	if err != nil {
		return nil, hsmErr(err, what)
	}
	ct := out
	if decrypt {
		ct = in
	}
	if m == bm.mech && len(out) != len(in) || len(ct) < bm.size {
		return nil, newErr(ck.CKR_DEVICE_ERROR, errclass.Internal, "%s: the HSM returned %d bytes for %d", what, len(out), len(in))
	}
	if bm.chain {
		op.iv = bytes.Clone(ct[len(ct)-bm.size:])
	}
	return out, nil
}
