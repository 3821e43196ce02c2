#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pkcshsm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mk_change
short_description: Drive a concurrent HSM master key change with pkcshsm_mk_change
description:
  - Brings the master key change operation of the pkcshsm tokens of a host
    to a wanted state by running C(pkcshsm_mk_change) on it
    (see pkcshsm_mk_change(1)).
  - C(state=reenciphered) re-enciphers every token key and every session key
    of the running applications for the new master keys loaded by the
    security officer; C(state=finalized) completes the change once the
    officer has set (activated) the new master keys on every APQN;
    C(state=canceled) undoes it before any APQN has activated them.
  - Idempotent. An operation already in the wanted state reports
    C(changed=false); one left behind by a crash is completed the way
    C(pkcshsm_mk_change list) advises (an interrupted reencipher is canceled
    and started again, an interrupted finalize or cancel is resumed). A
    change that has already ended (found in the history of the state
    directory) is reported with C(changed=false) and its outcome.
  - USER PINs are written to the tool's standard input, one for each prompt
    it prints; they are never put on the command line, in the environment,
    in logs or in the result.
version_added: "1.0.0"
author:
  - pkcshsm contributors (@pkcshsm)
options:
  state:
    description:
      - The wanted state of the operation.
    type: str
    required: true
    choices: [reenciphered, finalized, canceled]
  apqns:
    description:
      - The APQNs whose master keys change, as C(CARD.DOMAIN) in hexadecimal
        as lszcrypt prints them (for example C(0a.0024)); items may also be
        comma-separated lists.
      - Required with C(state=reenciphered); with the other states they and
        the patterns select the operation when C(id) is not given.
    type: list
    elements: str
  id:
    description:
      - The operation id (6 letters and digits) for C(state=finalized) or
        C(state=canceled), instead of selecting it by C(apqns) and patterns.
    type: str
  exclude_pids:
    description:
      - Processes not to address (C(--exclude-pid)); see STUCK PROCESSES in
        pkcshsm_mk_change(1) for what that risks.
    type: list
    elements: int
    default: []
extends_documentation_fragment:
  - pkcshsm.hsm.common
  - pkcshsm.hsm.common.patterns
attributes:
  check_mode:
    support: full
    description:
      - C(state=reenciphered) runs C(reencipher --dry-run), every check of
        the tool, and reports what it would re-encipher; the other states
        run C(verify) and report what they would do.
notes:
  - Run it on all hosts sharing the adapter domains before the officer
    activates the new master keys; the playbook C(rotate.yml) of this
    collection does, and gates the activation on C(verify) of every host.
  - Exit codes of the tool are returned in C(rc) with their class in
    C(error_class); the tool's C(error:) and C(hint:) lines in C(error)
    and C(hint).
"""

EXAMPLES = r"""
- name: Re-encipher for new CCA AES and APKA master keys
  pkcshsm.hsm.mk_change:
    state: reenciphered
    apqns: [01.0033, 02.0033]
    cca_aes_mkvp: 7DA05B2C85C962E4
    cca_apka_mkvp: E547F69DBBB63E09
    user_pin: "{{ vault_pkcshsm_user_pin }}"
  register: reenc

- name: Finalize it once the officer has set the new master keys
  pkcshsm.hsm.mk_change:
    state: finalized
    id: "{{ reenc.operation.id }}"
    user_pins:
      2: "{{ vault_cca_pin }}"
      4: "{{ vault_ep11_pin }}"

- name: Undo it before any APQN activated the new keys
  pkcshsm.hsm.mk_change:
    state: canceled
    apqns: [01.0033, 02.0033]
    cca_aes_mkvp: 7DA05B2C85C962E4
    cca_apka_mkvp: E547F69DBBB63E09
    user_pin: "{{ vault_pkcshsm_user_pin }}"
"""

RETURN = r"""
operation:
  description:
    - The operation as C(pkcshsm_mk_change list --json) prints it (id,
      state, apqns, new patterns, slots with their patterns before the
      change, transitions, next, set_loses_keys), after the module ran;
      for an ended change the entry of the history.
  returned: when an operation was found or created
  type: dict
  sample: {"id": "WX9jrc", "state": "REENCIPHERED", "apqns": ["01.0033"], "new": {"AES": "7DA05B2C85C962E4"}, "next": ["finalize", "cancel"]}
status:
  description:
    - Where the change stands now - C(reenciphered), C(finalizing),
      C(finalized), C(canceled), C(rolled-back), C(none) (no operation, none
      ended), or in check mode C(would-reencipher), C(would-finalize),
      C(would-cancel).
  returned: always
  type: str
  sample: reenciphered
actions:
  description: The tool commands the module ran (without PINs), in order.
  returned: always
  type: list
  elements: str
  sample: ["cancel --id WX9jrc", "reencipher --apqns 01.0033 --cca-aes-mkvp 7DA05B2C85C962E4"]
plan:
  description: The tool's dry-run output in check mode (C(state=reenciphered)).
  returned: in check mode
  type: str
verify:
  description: The C(verify --json) result in check mode for C(state=finalized) and C(state=canceled).
  returned: in check mode when an operation is active
  type: dict
rc:
  description: The tool's exit status on failure.
  returned: failure
  type: int
  sample: 7
error_class:
  description: The class of C(rc) (invalid argument, not found, failed precondition, conflict, unavailable, permission denied, ...).
  returned: failure
  type: str
  sample: permission denied
error:
  description: The tool's C(error:) lines.
  returned: failure of the tool
  type: str
  sample: "failed to log in to slot 2: USER PIN: PIN incorrect"
hint:
  description: The tool's C(hint:) lines, or the module's advice.
  returned: failure, when there is one
  type: str
  sample: check the PIN; wrong PINs are counted and lock the PIN
stdout:
  description: The output of the last tool command.
  returned: always
  type: str
stderr:
  description: The standard error of the last tool command (prompts included, never PINs).
  returned: always
  type: str
"""

import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pkcshsm.hsm.plugins.module_utils.pkcshsm import (
    COMMON_ARGS,
    PATTERN_ARGS,
    PIN_ARGS,
    ToolError,
    Tools,
    apqn_list,
    cmd_advice,
    fail_tool,
    op_intersects,
    op_matches,
    pattern_argv,
    wanted_patterns,
)

ID_RE = re.compile(r"^[A-Za-z0-9]{6}$")
CREATED_RE = re.compile(r"^Master key change operation '([A-Za-z0-9]{6})' created\.$", re.M)


class Runner:
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.tools = Tools(module)
        self.actions = []
        self.stdout = ""
        self.stderr = ""
        self.changed = False

    def tool(self, args, ok_codes=(0,)):
        self.actions.append(" ".join(a for a in args))
        rc, out, err = self.tools.run("pkcshsm_mk_change", args, ok_codes=ok_codes)
        self.stdout, self.stderr = out, err
        return rc, out, err

    def excludes(self):
        out = []
        for pid in self.p["exclude_pids"] or []:
            out += ["--exclude-pid", str(pid)]
        return out

    def find(self):
        """(active matching op, other intersecting active ops, last ended
        matching entry)."""
        ops = self.tools.list_ops()
        want_id = self.p.get("id")
        mine, others = None, []
        for op in ops:
            if want_id:
                if op.get("id") == want_id:
                    mine = op
                continue
            if op_matches(op, self.apqns, self.patterns):
                mine = op
            elif op_intersects(op, self.apqns, self.patterns):
                others.append(op)
        ended = None
        for e in self.tools.history():
            op = e["op"]
            if (want_id and op.get("id") == want_id) or (not want_id and op_matches(op, self.apqns, self.patterns)):
                ended = e
        return mine, others, ended

    def load(self, op_id):
        for op in self.tools.list_ops():
            if op.get("id") == op_id:
                return op
        for e in reversed(self.tools.history()):
            if e["op"].get("id") == op_id:
                return dict(e["op"], outcome=e.get("outcome"))
        return None

    def done(self, status, op=None, **extra):
        res = dict(changed=self.changed, status=status, actions=self.actions, stdout=self.stdout, stderr=self.stderr)
        if op is not None:
            res["operation"] = op
        res.update(extra)
        self.module.exit_json(**res)

    def fail(self, msg, hint=None, op=None, **extra):
        res = dict(msg=msg + (" (hint: %s)" % hint if hint else ""), changed=self.changed, actions=self.actions,
                   stdout=self.stdout, stderr=self.stderr)
        if hint:
            res["hint"] = hint
        if op is not None:
            res["operation"] = op
        res.update(extra)
        self.module.fail_json(**res)

    def busy(self, op):
        if op.get("running_pid"):
            self.fail(
                "operation %s is being worked on by %s (pid %s)" % (op["id"], op.get("running") or "another command", op["running_pid"]),
                hint="wait until that command ends, then run the play again",
                op=op,
                rc=5,
                error_class="conflict",
            )

    def run(self):
        p = self.p
        try:
            self.apqns = apqn_list(p.get("apqns"))
            self.patterns = wanted_patterns(p)
        except ValueError as e:
            self.fail(str(e), hint="give APQNs as lszcrypt prints them and patterns in hex", rc=2, error_class="invalid argument")
        if p.get("id") and not ID_RE.match(p["id"]):
            self.fail("id %r is not an operation id" % p["id"], hint="an id is 6 letters and digits, as reencipher prints it", rc=2,
                      error_class="invalid argument")
        state = p["state"]
        if state == "reenciphered":
            if not self.apqns or not self.patterns:
                self.fail("state=reenciphered needs apqns and at least one new pattern",
                          hint="set apqns and ep11_wkvp or cca_*_mkvp", rc=2, error_class="invalid argument")
            if p.get("id"):
                self.fail("id selects an existing operation; state=reenciphered creates one from apqns and the patterns",
                          hint="drop id", rc=2, error_class="invalid argument")
        elif not p.get("id") and not (self.apqns and self.patterns):
            self.fail("state=%s needs id, or apqns and the new patterns of the operation" % state,
                      hint="set id (from the reencipher result) or the same apqns and patterns as for reencipher", rc=2,
                      error_class="invalid argument")
        try:
            getattr(self, "to_" + state)()
        except ToolError as e:
            fail_tool(self.module, e, changed=self.changed, actions=self.actions)

    def to_reenciphered(self):
        mine, others, ended = self.find()
        if others:
            o = others[0]
            self.fail(
                "the host is already in another master key change operation %s (state %s, APQNs %s) that shares an APQN and a master key type"
                % (o["id"], o["state"], ",".join(o.get("apqns") or [])),
                hint="complete that operation first: %s" % cmd_advice(o),
                op=o,
                rc=5,
                error_class="conflict",
            )
        if mine is not None:
            self.busy(mine)
            if mine["state"] == "REENCIPHERED":
                self.done("reenciphered", mine)
            nxt = mine.get("next") or []
            if nxt == ["cancel"]:
                # An interrupted reencipher (INITIAL, REENCIPHERING), a
                # cancel in progress or a failed one: complete the cancel,
                # then re-encipher afresh.
                if self.module.check_mode:
                    self.done("would-reencipher", mine, msg="would complete the interrupted operation with cancel, then reencipher")
                self.tool(["cancel", "--id", mine["id"]] + self.excludes())
                self.changed = True
            else:
                self.fail(
                    "operation %s is in state %s: a finalize has begun, it cannot be re-enciphered" % (mine["id"], mine["state"]),
                    hint="complete it with state=finalized (%s)" % cmd_advice(mine),
                    op=mine,
                    rc=4,
                    error_class="failed precondition",
                )
        elif ended is not None and ended.get("outcome") == "finalized":
            # The fleet is past this change: nothing to do.
            self.done("finalized", dict(ended["op"], outcome="finalized"))
        args = ["reencipher", "--apqns", ",".join(self.apqns)] + pattern_argv(self.p)
        if self.module.check_mode:
            self.actions.append(" ".join(args + ["--dry-run"]))
            _rc, out, err = self.tools.run("pkcshsm_mk_change", args + ["--dry-run"])
            self.stdout, self.stderr = out, err
            self.done("would-reencipher", None, plan=out, changed=True)
        self.actions.append(" ".join(args))
        _rc, out, err = self.tools.run("pkcshsm_mk_change", args + self.excludes())
        self.stdout, self.stderr = out, err
        self.changed = True
        m = CREATED_RE.search(out)
        op = self.load(m.group(1)) if m else None
        self.done("reenciphered", op)

    def to_finalized(self):
        mine, _others, ended = self.find()
        if mine is None:
            if ended is not None and ended.get("outcome") == "finalized":
                self.done("finalized", dict(ended["op"], outcome="finalized"))
            if ended is not None:
                self.fail(
                    "operation %s ended %s; there is nothing to finalize" % (ended["op"].get("id"), ended.get("outcome")),
                    hint="re-encipher again (state=reenciphered) before the new master keys are set",
                    op=ended["op"], rc=3, error_class="not found")
            self.fail("no master key change operation %s on this host" % (self.p.get("id") or "for these APQNs and patterns"),
                      hint="run state=reenciphered first; pkcshsm_mk_change list shows the active operations", rc=3,
                      error_class="not found")
        self.busy(mine)
        if "finalize" not in (mine.get("next") or []):
            self.fail(
                "operation %s is in state %s and cannot be finalized" % (mine["id"], mine["state"]),
                hint="complete it as list advises: %s" % cmd_advice(mine),
                op=mine, rc=4, error_class="failed precondition")
        if self.module.check_mode:
            v = self.tools.verify(op_id=mine["id"])
            self.done("would-finalize", mine, verify=v, changed=True)
        self.tool(["finalize", "--id", mine["id"]] + self.excludes())
        self.changed = True
        self.done("finalized", self.load(mine["id"]))

    def to_canceled(self):
        mine, _others, ended = self.find()
        if mine is None:
            if ended is not None and ended.get("outcome") == "finalized":
                self.fail(
                    "operation %s was finalized; it cannot be canceled" % ended["op"].get("id"),
                    hint="the new master keys are in use; pkcshsm keys restore-old brings back the previous blobs if the officer restores the old master key",
                    op=ended["op"], rc=4, error_class="failed precondition")
            # Nothing active: canceled already, rolled back, or never
            # re-enciphered on this host (a reencipher that failed before
            # recording leaves nothing).
            status = ended.get("outcome") if ended is not None else "none"
            self.done(status, dict(ended["op"], outcome=status) if ended is not None else None)
        self.busy(mine)
        if "cancel" not in (mine.get("next") or []):
            self.fail(
                "operation %s is in state %s and cannot be canceled" % (mine["id"], mine["state"]),
                hint="a finalize has begun; never cancel now, complete it: %s" % cmd_advice(mine),
                op=mine, rc=4, error_class="failed precondition")
        if self.module.check_mode:
            self.done("would-cancel", mine, changed=True)
        self.tool(["cancel", "--id", mine["id"]] + self.excludes())
        self.changed = True
        self.done("canceled", self.load(mine["id"]))


def main():
    args = dict(
        state=dict(type="str", required=True, choices=["reenciphered", "finalized", "canceled"]),
        id=dict(type="str"),
        exclude_pids=dict(type="list", elements="int", default=[]),
    )
    args.update(PATTERN_ARGS)
    args.update(PIN_ARGS)
    args.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=args, supports_check_mode=True)
    Runner(module).run()


if __name__ == "__main__":
    main()
