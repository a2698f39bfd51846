"""Decorators: a session per call, an action per model call, for plain and async code."""

import asyncio

from layer_sdk import SessionActionKind, layer

layer.init()


@layer.action(kind=SessionActionKind.COMPLETION_OUTPUT, attributes={"model.id": "echo-1"})
def ask_model(question: str) -> str:
    return f"You asked: {question}"  # recorded as the action's data


@layer.action(kind=SessionActionKind.EMBEDDINGS, attributes={"model.id": "embed-1"})
async def embed(text: str) -> list[float]:
    await asyncio.sleep(0)
    return [float(len(text)), 0.5]


@layer.session(attributes={"user.id": "user-002"})
def answer(question: str, session_id: str | None = None) -> str:
    print(f"session {session_id}")
    return ask_model(question)  # joins this call's session


@layer.session(attributes={"user.id": "user-003"})
async def index(text: str) -> list[float]:
    return await embed(text)


print(answer("What is Layer?"))
print(asyncio.run(index("hello")))
print("delivered:", layer.flush(timeout=10))
