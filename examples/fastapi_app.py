"""A FastAPI app whose requests each run in a Layer session (the ASGI middleware).

Serve it with ``uvicorn examples.fastapi_app:app``. Run as a script, it sends
itself the two turns of a conversation through FastAPI's test client, the
second naming the session of the first, and exits.
"""

from fastapi import FastAPI

from layer_sdk import SessionActionKind, layer
from layer_sdk.integrations import current_session_id
from layer_sdk.integrations.asgi import LayerMiddleware

layer.init()  # LAYER_BASE_URL and LAYER_APPLICATION_ID from the environment

app = FastAPI()
app.add_middleware(LayerMiddleware, exclude_paths=["/health"])


@layer.action(kind=SessionActionKind.COMPLETION_PROMPT)
def prompt(question: str) -> dict:
    return {"messages": [{"role": "user", "content": question}]}


@layer.action(kind=SessionActionKind.COMPLETION_OUTPUT)
def output(text: str) -> dict:
    return {"messages": [{"role": "assistant", "content": text}]}


@app.post("/chat")
async def chat(question: str) -> dict:
    prompt(question)
    reply = question.upper()  # stands for the model call: an OpenAI call here is recorded too
    output(reply)
    return {"answer": reply, "session_id": current_session_id()}


@app.get("/health")
async def health() -> dict:
    return {"ok": True}


if __name__ == "__main__":
    from fastapi.testclient import TestClient

    with TestClient(app) as http:
        first = http.post("/chat", params={"question": "where is my order?"}).json()
        print(first)
        following = {"X-Layer-Session-Id": first["session_id"]}
        print(http.post("/chat", params={"question": "when?"}, headers=following).json())
        http.get("/health")
    print("delivered:", layer.flush(timeout=10))
