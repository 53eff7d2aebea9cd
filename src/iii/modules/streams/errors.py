"""The error codes of the ``stream::*`` functions.

Where the reference engine has a code for the case it is used as is; the others are ours, in snake_case.
"""

from typing import Final

from iii.protocol.errors import DESERIALIZATION_ERROR

__all__ = ["DESERIALIZATION_ERROR", "FAILED", "INVALID_NAME", "VALUE_TOO_LARGE"]

# DESERIALIZATION_ERROR (reference): the payload is not an object with the fields of the function, a field
# has the wrong type, or an update op is malformed.
INVALID_NAME: Final = "invalid_name"
"""A stream name, group id or item id is empty or longer than ``max_name_bytes``."""
VALUE_TOO_LARGE: Final = "VALUE_TOO_LARGE"
"""The item's JSON is longer than ``max_value_bytes``; nothing was written."""
FAILED: Final = {
    "stream::set": "STREAM_SET_ERROR",
    "stream::get": "STREAM_GET_ERROR",
    "stream::delete": "STREAM_DELETE_ERROR",
    "stream::update": "STREAM_UPDATE_ERROR",
    "stream::list": "STREAM_GET_GROUP_ERROR",
    "stream::list_groups": "STREAM_LIST_GROUPS_ERROR",
    "stream::list_all": "STREAM_LIST_ALL_ERROR",
    "stream::send": "STREAM_SEND_ERROR",
}
"""(reference) The backend, or a custom stream's function, failed: the code per function."""
