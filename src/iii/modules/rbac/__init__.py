"""The rbac module: the RBAC worker listener, a port where untrusted workers (a browser, a partner's service) connect.

Every worker that connects there is admitted by an auth function (its headers, query parameters and address
in; the functions it may call, what it may register, a context for the middleware out), its registrations pass
hook functions that may rewrite or refuse them, its calls pass a middleware function, and it sees and calls only
the functions ``expose_functions`` and its auth function allow. Workers of the engine's own port are unaffected.
The reference engine's ``iii-worker-manager`` with ``rbac`` settings, with its messages, inputs and error codes
(:mod:`.module`, :mod:`.policy`; the decisions in :mod:`.rules`).
"""

from .module import RbacModule
from .settings import RbacSettings

__all__ = ["RbacModule", "RbacSettings"]
