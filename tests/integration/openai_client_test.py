"""The official `openai` client against a real `tessera serve` (one local worker, tiny qwen3).

A random-weight qwen3 checkpoint with the real Qwen3 tokenizer and chat template is served on a
free 127.0.0.1 port; the client runs chat and completions, streaming and not, n, logprobs, tools
and error cases. Greedy output over HTTP must equal `tessera generate` for the same prompt ids.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

import openai
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_process import ServeProcess  # noqa: E402

BIN = os.environ["TESSERA_BIN"]
TESTDATA = os.environ["TESSERA_TESTDATA"]
PROMPT_IDS = [3, 1, 4, 1, 5, 9, 2, 6]


class OpenAiClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="openai_client_")
        cls.model = os.path.join(cls.tmp.name, "tiny")
        r = subprocess.run(
            [BIN, "make-model", "--arch", "qwen3", "--preset", "tiny", "--seed", "3",
             "--tokenizer", os.path.join(TESTDATA, "tokenizers", "qwen3"), "--out", cls.model],
            capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        cls.serve = ServeProcess(cls.model, "tiny", cls.tmp.name)
        cls.port = cls.serve.port
        base = cls.serve.base
        cls.client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0,
                                   timeout=60)
        cls.tokenizer = Tokenizer.from_file(os.path.join(cls.model, "tokenizer.json"))

    @classmethod
    def tearDownClass(cls):
        cls.serve.stop()
        cls.tmp.cleanup()

    def generate_ids(self, max_tokens):
        r = subprocess.run(
            [BIN, "generate", "--model", self.model, "--prompt-ids",
             ",".join(map(str, PROMPT_IDS)), "--max-tokens", str(max_tokens), "--temperature",
             "0", "--json"],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)["output_ids"]

    def test_models_lists_the_served_name(self):
        models = self.client.models.list()
        self.assertEqual([m.id for m in models.data], ["tiny"])

    def test_greedy_completion_equals_tessera_generate(self):
        want = self.generate_ids(8)
        got = self.client.completions.create(model="tiny", prompt=PROMPT_IDS, max_tokens=8,
                                             temperature=0, extra_body={"ignore_eos": True,
                                                                        "skip_special_tokens": False})
        self.assertEqual(got.choices[0].text, self.tokenizer.decode(want,
                                                                     skip_special_tokens=False))
        self.assertEqual(got.usage.prompt_tokens, len(PROMPT_IDS))
        self.assertEqual(got.usage.completion_tokens, 8)
        self.assertEqual(got.choices[0].finish_reason, "length")

    def test_streamed_completion_equals_non_streamed(self):
        kwargs = dict(model="tiny", prompt="The capital of France is", max_tokens=10,
                      temperature=0, extra_body={"ignore_eos": True})
        full = self.client.completions.create(**kwargs)
        chunks = list(self.client.completions.create(
            stream=True, stream_options={"include_usage": True}, **kwargs))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        self.assertEqual(text, full.choices[0].text)
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, 10)

    def test_chat_stream_and_non_stream_agree(self):
        messages = [{"role": "user", "content": "Hello there"}]
        full = self.client.chat.completions.create(model="tiny", messages=messages,
                                                   max_tokens=12, temperature=0)
        self.assertEqual(full.object, "chat.completion")
        self.assertEqual(full.choices[0].message.role, "assistant")
        self.assertIn(full.choices[0].finish_reason, ("stop", "length"))
        stream = self.client.chat.completions.create(model="tiny", messages=messages,
                                                     max_tokens=12, temperature=0, stream=True)
        content, reasoning, roles = "", "", []
        for chunk in stream:
            delta = chunk.choices[0].delta
            if delta.role:
                roles.append(delta.role)
            content += delta.content or ""
            reasoning += getattr(delta, "reasoning_content", None) or ""
        self.assertEqual(roles, ["assistant"])
        self.assertEqual(content, full.choices[0].message.content or "")
        self.assertEqual(reasoning, getattr(full.choices[0].message, "reasoning_content", None)
                         or "")

    def test_n_with_seed_is_reproducible(self):
        kwargs = dict(model="tiny", prompt="Once upon a time", max_tokens=6, temperature=1.0,
                      n=3, seed=11)
        a = self.client.completions.create(**kwargs)
        b = self.client.completions.create(**kwargs)
        self.assertEqual([c.index for c in a.choices], [0, 1, 2])
        self.assertEqual([c.text for c in a.choices], [c.text for c in b.choices])
        # Choice i samples with seed + i: the choices are not copies of each other.
        self.assertGreater(len({c.text for c in a.choices}), 1)

    def test_chat_logprobs(self):
        r = self.client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
            temperature=0, logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
        content = r.choices[0].logprobs.content
        self.assertEqual(len(content), 4)
        for entry in content:
            self.assertEqual(len(entry.top_logprobs), 3)
            self.assertLessEqual(entry.logprob, 0.0)
            # Greedy: the sampled token is the most likely one.
            self.assertAlmostEqual(entry.logprob, entry.top_logprobs[0].logprob, places=4)

    def test_tools_are_accepted(self):
        tools = [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}]
        r = self.client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=tools, tool_choice="auto", max_tokens=8, temperature=0)
        self.assertIn(r.choices[0].finish_reason, ("stop", "length", "tool_calls"))

    def post(self, path, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def test_tokenize_and_detokenize(self):
        # vLLM's /tokenize and /detokenize: a prompt is encoded as HF tokenizers does.
        text = "Hello world, héllo 世界!"
        status, r = self.post("/tokenize", {"prompt": text})
        self.assertEqual(status, 200, r)
        want = self.tokenizer.encode(text).ids
        self.assertEqual(r["tokens"], want)
        self.assertEqual(r["count"], len(want))
        self.assertGreater(r["max_model_len"], 0)
        self.assertIsNone(r["token_strs"])
        status, r = self.post("/tokenize", {"model": "tiny", "prompt": text,
                                            "return_token_strs": True})
        self.assertEqual(status, 200, r)
        self.assertEqual(r["token_strs"], self.tokenizer.encode(text).tokens)
        status, r = self.post("/detokenize", {"tokens": want})
        self.assertEqual(status, 200, r)
        self.assertEqual(r["prompt"], text)

    def test_tokenize_messages_is_the_chat_prompt(self):
        messages = [{"role": "user", "content": "Hello there"}]
        status, r = self.post("/tokenize", {"messages": messages})
        self.assertEqual(status, 200, r)
        chat = self.client.chat.completions.create(model="tiny", messages=messages,
                                                   max_tokens=1, temperature=0)
        self.assertEqual(r["count"], chat.usage.prompt_tokens)
        # Rendered as the chat endpoint does: the generation prompt ends it.
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{self.port}/detokenize",
                data=json.dumps({"tokens": r["tokens"]}).encode(), method="POST")) as resp:
            text = json.loads(resp.read())["prompt"]
        self.assertTrue(text.endswith("<|im_start|>assistant\n"), text)
        status, r2 = self.post("/tokenize", {"messages": messages,
                                             "add_generation_prompt": False})
        self.assertEqual(status, 200, r2)
        self.assertLess(r2["count"], r["count"])

    def test_tokenize_errors_name_the_field(self):
        status, r = self.post("/tokenize", {"prompt": 5})
        self.assertEqual(status, 400)
        self.assertEqual(r["error"]["param"], "prompt")
        status, r = self.post("/tokenize", {})
        self.assertEqual(status, 400)
        self.assertIn("'prompt' or 'messages' is required", r["error"]["message"])
        status, r = self.post("/tokenize", {"model": "nope", "prompt": "x"})
        self.assertEqual(status, 404)
        status, r = self.post("/detokenize", {"tokens": [1, 10**8]})
        self.assertEqual(status, 400)
        self.assertEqual(r["error"]["param"], "tokens")
        self.assertIn("outside the vocabulary", r["error"]["message"])
        status, r = self.post("/detokenize", {"tokens": [1, -2]})
        self.assertEqual(status, 400)
        self.assertIn("tokens[1]", r["error"]["message"])
        status, r = self.post("/detokenize", {})
        self.assertEqual(status, 400)
        with self.assertRaises(urllib.error.HTTPError) as ctx:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/tokenize", timeout=10)
        self.assertEqual(ctx.exception.code, 405)

    def test_errors(self):
        with self.assertRaises(openai.NotFoundError):
            self.client.completions.create(model="nope", prompt="x", max_tokens=2)
        with self.assertRaises(openai.BadRequestError) as ctx:
            self.client.completions.create(model="tiny", prompt="x", max_tokens=10**7)
        self.assertIn("maximum context length", str(ctx.exception))
        with self.assertRaises(openai.BadRequestError) as ctx:
            self.client.chat.completions.create(model="tiny", messages=[], max_tokens=2)
        self.assertIn("messages", str(ctx.exception))
        with self.assertRaises(openai.BadRequestError):
            self.client.completions.create(model="tiny", prompt="x", temperature=-1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
