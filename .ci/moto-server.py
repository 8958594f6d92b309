"""The local AWS emulator for the tests: moto's server with DynamoDB requests serialized.

moto checks a conditional write's condition and then applies it, unlocked, on a thread
per request, so two concurrent compare-and-swaps can both pass `#v = :old` and one
update is lost (seen in the key-value e2e test: two swaps from 3 both wrote 4).
DynamoDB applies a conditional write atomically, and the compare-and-swap tests rely on
that. Other services (S3, SQS) stay concurrent.

    python moto-server.py HOST PORT
"""

import os
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

host, port = sys.argv[1], int(sys.argv[2])
os.environ.setdefault("MOTO_PORT", str(port))
moto = DomainDispatcherApplication(create_backend_app)
dynamodb = threading.Lock()


def app(environ, start_response):
    if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
        return moto(environ, start_response)
    with dynamodb:
        body = moto(environ, start_response)
        try:
            return [b"".join(body)]
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()


run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)
