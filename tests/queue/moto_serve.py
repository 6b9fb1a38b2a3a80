"""moto's server for the queue's tests, one request at a time, until killed: `python moto_serve.py PORT`.

moto's SQS model is not thread-safe: under concurrent receives and deletes it raises inside ('Set changed
size during iteration', 'list.remove(x): x not in list') and answers 500, which real SQS never does for
that reason. So its WSGI app is wrapped in a lock. Long polls hold the lock for their wait: the tests'
workers poll for a second at most.
"""
import logging
import sys
import threading
import time

from moto.moto_server import threaded_moto_server
from moto.server import ThreadedMotoServer


def main(port: int) -> None:
    dispatcher = threaded_moto_server.DomainDispatcherApplication
    lock = threading.Lock()

    class OneAtATime(dispatcher):
        def __call__(self, environ, start_response):
            with lock:
                return list(super().__call__(environ, start_response))

    threaded_moto_server.DomainDispatcherApplication = OneAtATime
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request costs more than moto's work
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(int(sys.argv[1]))
