# -*- coding: utf-8 -*-
# Copyright: pkcshsm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the pkcshsm.hsm collection."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.pkcshsm.hsm.plugins.module_utils.pkcshsm import PATTERN_OPTIONS, apqn_list, normalize_pattern


def fingerprint(change):
    """One line naming a change (pkcshsm_change: apqns and the new
    patterns) in a canonical form, so two hosts' changes compare equal
    exactly when they change the same APQNs to the same patterns:
    "01.0033,02.0033 AES=7DA05B2C85C962E4 WK=...". """
    if not isinstance(change, dict):
        raise AnsibleFilterError("pkcshsm_change must be a mapping of apqns and patterns, not %r" % (change,))
    try:
        apqns = apqn_list(change.get("apqns") or [])
        parts = [",".join(sorted(set(apqns)))]
        for opt, mktype, _flag, digits in PATTERN_OPTIONS:
            if change.get(opt):
                parts.append("%s=%s" % (mktype, normalize_pattern(str(change[opt]), digits)))
    except ValueError as e:
        raise AnsibleFilterError("pkcshsm_change: %s" % e)
    return " ".join(parts)


class FilterModule(object):
    def filters(self):
        return {"fingerprint": fingerprint}
