"""An S3-compatible server for dynreg's tests: moto's server, with writes made atomic.

moto checks a conditional PUT (`If-Match`, `If-None-Match: *`) and then stores the object in two
steps, and its server is threaded, so two PUTs conditioned on the same ETag can both succeed.
S3 itself decides each conditional write atomically, and dynreg's S3 backends rely on that: a
touching read must never replace a document a register has just written. This wrapper takes
one lock around every request that writes (PUT, POST, DELETE); reads are not serialised.

Usage: python s3-server.py [-H 127.0.0.1] [-p 5000]   (the interpreter of a venv with moto[s3])
"""

import argparse
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

WRITES = {"PUT", "POST", "DELETE"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def atomic_writes(environ, start_response):
        if environ.get("REQUEST_METHOD") not in WRITES:
            return app(environ, start_response)
        with lock:
            result = app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

    run_simple(
        args.host,
        args.port,
        atomic_writes,
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
