# -*- coding: utf-8 -*-
# Copyright: pkcshsm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options every pkcshsm.hsm module shares."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Where the tools are and what they use, and the USER PINs.
    DOCUMENTATION = r"""
options:
  user_pin:
    description:
      - The USER PIN of every token the tool asks for (keep it in Ansible
        Vault). Used for every slot not named in C(user_pins).
      - Written to the tool's standard input at its prompt; never on a
        command line, in a log or in a result.
    type: str
  user_pins:
    description:
      - USER PINs by slot number, for tokens with different PINs.
    type: dict
  root:
    description:
      - The root of every default pkcshsm path (C(PKCSHSM_ROOT)); default the
        environment's, else C(/).
    type: path
  bin_dir:
    description: The directory of the pkcshsm tools; default a search of PATH.
    type: path
  config:
    description: The token configuration (C(--config)).
    type: path
  state_dir:
    description: The directory of the operation files (C(--state-dir)).
    type: path
  socket:
    description: The daemon's admin socket (C(--socket)).
    type: path
  timeout:
    description: How long every process may take for one step (C(--timeout), for example C(2m)).
    type: str
"""

    # The new master key verification patterns, as reencipher takes them.
    PATTERNS = r"""
options:
  ep11_wkvp:
    description: The verification pattern of the new EP11 wrapping key (16 bytes in hex; the 32-byte sysfs value is accepted).
    type: str
  cca_sym_mkvp:
    description: The verification pattern of the new CCA SYM master key (8 bytes in hex).
    type: str
  cca_asym_mkvp:
    description: The verification pattern of the new CCA ASYM master key (8 bytes in hex; the 16-byte sysfs value is accepted).
    type: str
  cca_aes_mkvp:
    description: The verification pattern of the new CCA AES master key (8 bytes in hex).
    type: str
  cca_apka_mkvp:
    description: The verification pattern of the new CCA APKA master key (8 bytes in hex).
    type: str
"""
