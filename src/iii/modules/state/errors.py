"""The error codes of the ``state::*`` functions.

Where the reference engine has a code for the case it is used as is (its spelling, upper or lower case);
the others are ours, in snake_case.
"""

from typing import Final

from iii.protocol.errors import DESERIALIZATION_ERROR

__all__ = [
    "DESERIALIZATION_ERROR",
    "FAILED",
    "INVALID_KEY",
    "INVALID_SCOPE",
    "VALUE_TOO_LARGE",
    "VERSION_MISMATCH",
]

# DESERIALIZATION_ERROR (reference): the payload is not an object with the fields of the function, a field
# has the wrong type, or an update op is malformed (unknown ``type``, missing ``path``, ``by`` not an integer).
INVALID_SCOPE: Final = "invalid_scope"
"""The scope is empty or longer than ``max_name_bytes``."""
INVALID_KEY: Final = "invalid_key"
"""The key is empty or longer than ``max_name_bytes``."""
VALUE_TOO_LARGE: Final = "VALUE_TOO_LARGE"
"""(reference) The value's JSON is longer than ``max_value_bytes``; nothing was written."""
VERSION_MISMATCH: Final = "version_mismatch"
"""``expected_version`` was given and the key is at another version (0: absent); nothing was written."""
FAILED: Final = {
    "state::set": "SET_ERROR",
    "state::get": "GET_ERROR",
    "state::delete": "DELETE_ERROR",
    "state::update": "UPDATE_ERROR",
    "state::list": "LIST_ERROR",
    "state::list_groups": "LIST_GROUPS_ERROR",
}
"""(reference) The backend failed (I/O error, Redis unreachable): the code per function."""
