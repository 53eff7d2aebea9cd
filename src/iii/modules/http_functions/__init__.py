"""The http_functions module: functions that live behind an HTTP endpoint, called by the engine.

A worker registers a function with an ``invocation`` (``registerfunction``'s field; the official SDKs'
``HttpInvocationConfig``: URL, method, timeout, headers, ``auth`` naming engine-side secrets: see
:mod:`.endpoint`). The engine asks this module, through the function kind of :mod:`iii.modules.api`, to serve
it: the module checks the URL against its policy (:mod:`.policy`) and the credentials in the engine's
environment, then every call of the function is an HTTP request to the URL (:mod:`.invoker`), made inside the
engine. The registering worker owns the function: its ``unregisterfunction`` and its disconnect remove it, as
the reference does, and the listings show it under its name. A refused registration is answered with an
``error`` notice naming the function (the reference only logs it).

What the reference leaves open, settled here (:class:`HttpFunctionsSettings`): at most
``max_concurrent_calls`` requests at once (later calls wait for a slot within their timeout); a timeout for each
call (its ``timeout_ms``, cut to ``max_timeout_ms``); no redirect followed; host names checked on the addresses
actually connected to; no cookies kept between calls; the response read up to ``max_response_bytes``; the
variables a worker may name limited by ``secret_keys`` (and never the engine's own ``III_ENGINE_*``); secrets
never logged nor put into an error message. Runs inside the engine only: a worker cannot take other workers'
registrations.
"""

from .module import HttpFunctionsModule
from .settings import HttpFunctionsSettings

__all__ = ["HttpFunctionsModule", "HttpFunctionsSettings"]
