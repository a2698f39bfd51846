"""A Flask app whose requests each run in a Layer session (the WSGI middleware).

Serve it with any WSGI server (``flask --app examples.flask_app run``,
``gunicorn examples.flask_app:app``). Run as a script, it sends itself the two
turns of a conversation through Flask's test client, the second naming the
session of the first, and a streamed answer, and exits.
"""

from flask import Flask, Response, request

from layer_sdk import SessionActionKind, layer
from layer_sdk.integrations import current_session_id
from layer_sdk.integrations.wsgi import LayerMiddleware

layer.init()  # LAYER_BASE_URL and LAYER_APPLICATION_ID from the environment

app = Flask(__name__)
app.wsgi_app = LayerMiddleware(app.wsgi_app, exclude_paths=["/health"])


@layer.action(kind=SessionActionKind.COMPLETION_PROMPT)
def prompt(question: str) -> dict:
    return {"messages": [{"role": "user", "content": question}]}


@layer.action(kind=SessionActionKind.COMPLETION_OUTPUT)
def output(text: str) -> dict:
    return {"messages": [{"role": "assistant", "content": text}]}


@app.post("/chat")
def chat():
    question = request.args["question"]
    prompt(question)
    reply = question.upper()  # stands for the model call: an OpenAI call here is recorded too
    output(reply)
    return {"answer": reply, "session_id": current_session_id()}


@app.get("/stream")
def stream():
    question = request.args["question"]

    def words():  # produced as the server sends them, after stream() returned
        prompt(question)
        for word in question.upper().split():
            yield word + " "
        output(question.upper())

    return Response(words(), mimetype="text/plain")


@app.get("/health")
def health():
    return {"ok": True}


if __name__ == "__main__":
    http = app.test_client()
    first = http.post("/chat?question=where is my order?").json
    print(first)
    following = {"X-Layer-Session-Id": first["session_id"]}
    print(http.post("/chat?question=when?", headers=following).json)
    print(http.get("/stream?question=tell me more").get_data(as_text=True))
    http.get("/health")
    print("delivered:", layer.flush(timeout=10))
