#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pkcshsm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mk_change_info
short_description: The master key change operations of a host and whether activation is safe
description:
  - Returns the active master key change operations of the pkcshsm tokens of
    a host (C(pkcshsm_mk_change list --json)), the ended ones from the
    history of the state directory, and, with C(verify=true), the result of
    C(pkcshsm_mk_change verify --json) for the given operation or APQNs and
    patterns - whether setting (activating) the new master keys on those
    APQNs now loses no key.
  - Changes nothing on the host.
version_added: "1.0.0"
author:
  - pkcshsm contributors (@pkcshsm)
options:
  apqns:
    description:
      - The APQNs of the change, as C(CARD.DOMAIN) in hexadecimal; with the
        patterns they select C(operation) and what C(verify) checks.
    type: list
    elements: str
  id:
    description: An operation id; selects C(operation) and what C(verify) checks.
    type: str
  verify:
    description:
      - Run C(pkcshsm_mk_change verify --json). Exit status 0 (ready) and 4
        (not ready) are results; any other is a failure of the module.
    type: bool
    default: false
extends_documentation_fragment:
  - pkcshsm.hsm.common
  - pkcshsm.hsm.common.patterns
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
"""

EXAMPLES = r"""
- name: Is it safe to set the new master keys on this host?
  pkcshsm.hsm.mk_change_info:
    id: "{{ reenc.operation.id }}"
    verify: true
  register: info

- name: Stop unless it is
  ansible.builtin.assert:
    that: info.ready
    fail_msg: "{{ info.verify.problems | join('; ') }} - fix: {{ info.verify.fix }}"
"""

RETURN = r"""
operations:
  description: The active operations as C(pkcshsm_mk_change list --json) prints them.
  returned: always
  type: list
  elements: dict
operation:
  description: The active operation selected by C(id) or by C(apqns) and the patterns.
  returned: when one is active
  type: dict
others:
  description: Active operations that share an APQN and a master key type with C(apqns) and the patterns (a reencipher would be refused).
  returned: when C(apqns) are given
  type: list
  elements: dict
ended:
  description: The last history entry of the selected change (at, outcome, uid, op).
  returned: when the change has ended on this host
  type: dict
verify:
  description:
    - The object C(verify --json) prints (ready, apqns, types, slots with
      keys, missing_new, session_keys_missing_new, lost and reasons,
      problems, fix) plus its exit status in C(rc).
  returned: when C(verify=true)
  type: dict
ready:
  description: Whether verify found activation safe (exit status 0).
  returned: when C(verify=true)
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pkcshsm.hsm.plugins.module_utils.pkcshsm import (
    COMMON_ARGS,
    PATTERN_ARGS,
    PIN_ARGS,
    ToolError,
    Tools,
    apqn_list,
    fail_tool,
    op_intersects,
    op_matches,
    wanted_patterns,
)


def main():
    args = dict(id=dict(type="str"), verify=dict(type="bool", default=False))
    args.update(PATTERN_ARGS)
    args.update(PIN_ARGS)
    args.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=args, supports_check_mode=True)
    p = module.params
    try:
        apqns = apqn_list(p.get("apqns"))
        patterns = wanted_patterns(p)
    except ValueError as e:
        module.fail_json(msg=str(e), hint="give APQNs as lszcrypt prints them and patterns in hex", rc=2)
    if p["verify"] and not p.get("id") and not (apqns and patterns):
        module.fail_json(msg="verify needs id, or apqns and the new patterns", hint="set id or apqns and ep11_wkvp/cca_*_mkvp", rc=2)
    tools = Tools(module)
    res = dict(changed=False)
    try:
        ops = tools.list_ops()
        res["operations"] = ops
        sel = None
        for op in ops:
            if (p.get("id") and op.get("id") == p["id"]) or (not p.get("id") and apqns and op_matches(op, apqns, patterns)):
                sel = op
        if sel is not None:
            res["operation"] = sel
        if apqns and patterns:
            res["others"] = [op for op in ops if op is not sel and op_intersects(op, apqns, patterns)]
        for e in tools.history():
            op = e["op"]
            if (p.get("id") and op.get("id") == p["id"]) or (not p.get("id") and apqns and op_matches(op, apqns, patterns)):
                res["ended"] = e
        if p["verify"]:
            if sel is not None:
                v = tools.verify(op_id=sel["id"])
            elif p.get("id"):
                v = tools.verify(op_id=p["id"])
            else:
                v = tools.verify(apqns=apqns, params=p)
            res["verify"] = v
            res["ready"] = v.get("rc") == 0 and bool(v.get("ready"))
    except ToolError as e:
        fail_tool(module, e)
    module.exit_json(**res)


if __name__ == "__main__":
    main()
