"""A WSGI web handler: one session per request, reported off the request's path.

Serves one request to itself and exits, so that it can run unattended; drop the
self-request to keep it serving.
"""

import json
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

from layer_sdk import SessionActionKind, layer

layer.init()


def app(environ, start_response):  # type: ignore[no-untyped-def]
    question = environ.get("QUERY_STRING", "") or "hello"
    session_id = layer.create_session(attributes={"route": environ["PATH_INFO"]})
    answer = question.upper()  # stands for the model call
    layer.append_action(session_id, kind=SessionActionKind.COMPLETION_PROMPT, data=question)
    layer.append_action(session_id, kind=SessionActionKind.COMPLETION_OUTPUT, data=answer)
    body = json.dumps({"session_id": session_id, "answer": answer}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]  # the handler never waited for Layer


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
threading.Thread(target=server.handle_request, daemon=True).start()
with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/ask?bonjour") as response:
    print(response.read().decode())
server.server_close()
print("delivered:", layer.flush(timeout=10))
