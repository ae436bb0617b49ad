"""moto's standalone S3 server on loopback, for the zoo tests and benchmarks: ``python
scripts/zoo_s3_server.py PORT``.

It is moto's own server app (``python -m moto.server``) with one change: requests are served one
at a time. moto checks a write's ``If-None-Match`` / ``If-Match`` and then stores the object in
two steps, so two threads can both pass the check; real S3 decides a conditional write
atomically, and serialising requests gives moto the same guarantee.
"""

from __future__ import annotations

import sys
import threading


def main(port: int) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):  # noqa: ANN001, ANN202 (WSGI signature)
        with lock:
            return list(app(environ, start_response))  # the whole response under the lock

    run_simple("127.0.0.1", port, one_at_a_time, threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(int(sys.argv[1]))
