"""Anthropic instrumentation: unchanged Anthropic code, reported to Layer.

Needs ``pip install -e '.[anthropic]'`` (in a checkout). Point ``ANTHROPIC_BASE_URL`` at
Anthropic (with ``ANTHROPIC_API_KEY``) or at any Anthropic-compatible server.
"""

from anthropic import Anthropic

from layer_sdk import layer

layer.init()  # instruments anthropic: nothing else to do
client = Anthropic()

with layer.session_context() as session_id:  # every call in the block joins this session
    message = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=256,
        system="Answer in one word.",
        messages=[{"role": "user", "content": "Name a Portuguese city."}],
    )
    print(message.content[0].text)

    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=256,
        messages=[{"role": "user", "content": "And a river?"}],
    ) as stream:
        print("".join(stream.text_stream))

# The session can also travel with the call; the header never reaches Anthropic.
client.messages.create(
    model="claude-sonnet-4-5",
    max_tokens=256,
    messages=[{"role": "user", "content": "And a bridge?"}],
    stream=True,
    extra_headers={"X-Layer-Session-Id": session_id},
).close()
print("delivered:", layer.flush(timeout=10))
