"""The http module: the ``http`` trigger type, an HTTP server whose routes call functions, bodies in channels.

Written against :mod:`iii.modules.api` alone, like every module: inside the engine (``--http-port``, on by
default) or as its own worker (``iii worker http --url ...``). A worker binds a function with a trigger of type
``http`` and a config ``{"api_path": "/users/:id", "http_method": "POST"}`` (and optionally
``middleware_function_ids``). Each matching request becomes one exchange
(:class:`~iii.modules.http.exchange.HttpExchange`):

0. the binding's middleware functions are called in order (:mod:`iii.modules.http.middleware`); one of them may
   answer the request instead, and then nothing else happens;
1. two channels are created (:meth:`~iii.modules.api.ModuleHost.create_channel`); the module keeps the request
   channel's writer and the response channel's reader (:mod:`iii.modules.http.bodies`);
2. the function is called with the payload of the reference engine (``query_params``, ``path_params``,
   ``headers``, ``path``, ``method``, ``body`` for JSON, ``trigger``, and the refs ``request_body`` and
   ``response``), while the request body streams into ``request_body``;
3. the response is decided by whichever comes first: binary data on the response channel (a streamed response,
   with the status and headers of earlier ``set_status`` / ``set_headers`` messages), or a returned value (an
   envelope ``{status_code, headers?, body?}``, or any other value as a JSON body; see
   :func:`~iii.modules.http.responses.is_envelope`). A function that returns None answers through the channel;
   a clean end of it with no data is an empty body, a broken one 502 (once the call has ended: in a worker, the
   news that the function's SDK released its writer may come before its result);
4. when the exchange ends, its call is dropped and the channels' ends that no one connected are released.

Errors the module answers itself have one JSON shape (:func:`~iii.modules.http.responses.error_response`):
404 unknown route, 405 wrong method, 413 body over the limit, 400 malformed JSON, 500 failed function, 502
function's worker gone or response stream broken, 503 no function registered, 504 no answer within
``timeout_s`` of the whole request, or a request body that stopped moving that long. Memory stays bounded in
both directions: the channels' backpressure reaches the HTTP sockets.

aiohttp's low-level server does the HTTP/1.1 work (see docs/DESIGN.md for why aiohttp). The package's parts:
``module`` (the Module and the trigger type), ``exchange`` (one request), ``bodies`` (the two streams),
``routes``, ``middleware``, ``responses`` (pure), ``settings``.
"""

from iii.modules.http.module import HttpModule
from iii.modules.http.settings import HttpSettings

__all__ = ["HttpModule", "HttpSettings"]
