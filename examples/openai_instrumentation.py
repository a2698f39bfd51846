"""OpenAI instrumentation: unchanged OpenAI code, reported to Layer.

Needs ``pip install -e '.[openai]'`` (in a checkout). Point ``OPENAI_BASE_URL`` at OpenAI
(with ``OPENAI_API_KEY``) or at any OpenAI-compatible server.
"""

from openai import OpenAI

from layer_sdk import layer

layer.init()  # instruments openai: nothing else to do
client = OpenAI()

with layer.session_context() as session_id:  # every call in the block joins this session
    chat = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Name a Portuguese city."}],
    )
    print(chat.choices[0].message.content)

    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "And a river?"}],
        stream=True,
    )
    print("".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))

# The session can also travel with the call; the header never reaches OpenAI.
client.embeddings.create(
    model="text-embedding-3-small",
    input="Lisbon",
    extra_headers={"X-Layer-Session-Id": session_id},
)
print("delivered:", layer.flush(timeout=10))
