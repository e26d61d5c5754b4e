"""gpt-oss in its release format, served end to end: a tiny random-weight gpt-oss checkpoint with
MXFP4 experts (`make-model --dtype mxfp4`), the real gpt-oss tokenizer (o200k_harmony, 201k
vocabulary) and the real chat template, behind a real `tessera serve` with one local worker
process on a free 127.0.0.1 port, driven by the official `openai` client.

Checked: greedy completions over HTTP equal `tessera generate` on the same ids; a chat request's
prompt is the template rendered by Hugging Face's jinja2 setup and encoded by HF `tokenizers`
(usage.prompt_tokens and the generated ids both agree); streaming and non-streaming chat agree.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import openai
from tokenizers import Tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "coordinator"))
from hf_jinja import hf_environment  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_process import ServeProcess  # noqa: E402

BIN = os.environ["TESSERA_BIN"]
TESTDATA = os.environ["TESSERA_TESTDATA"]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


class GptOssServeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="gpt_oss_serve_")
        cls.model = os.path.join(cls.tmp.name, "gpt-oss-tiny-mxfp4")
        r = subprocess.run(
            [BIN, "make-model", "--arch", "gpt_oss", "--preset", "tiny", "--dtype", "mxfp4",
             "--seed", "5", "--tokenizer", os.path.join(TESTDATA, "tokenizers", "gpt_oss"),
             "--out", cls.model],
            capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        with open(os.path.join(cls.model, "config.json")) as f:
            assert json.load(f)["quantization_config"]["quant_method"] == "mxfp4"
        cls.template_path = os.path.join(TESTDATA, "chat_templates", "openai-gpt-oss-120b.jinja")
        shutil.copy(cls.template_path, os.path.join(cls.model, "chat_template.jinja"))
        cls.serve = ServeProcess(cls.model, "gpt-oss", cls.tmp.name,
                                 ["--kv-cache-memory", "64MiB"])
        base = cls.serve.base
        cls.client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0,
                                   timeout=120)
        cls.tokenizer = Tokenizer.from_file(os.path.join(cls.model, "tokenizer.json"))

    @classmethod
    def tearDownClass(cls):
        cls.serve.stop()
        cls.tmp.cleanup()

    def generate_ids(self, prompt_ids, max_tokens):
        r = subprocess.run(
            [BIN, "generate", "--model", self.model, "--prompt-ids",
             ",".join(map(str, prompt_ids)), "--max-tokens", str(max_tokens), "--temperature",
             "0", "--json"],
            capture_output=True, text=True, timeout=180)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)["output_ids"]

    def hf_prompt_ids(self):
        """The chat prompt as Hugging Face renders and encodes it."""
        with open(self.template_path) as f:
            template = hf_environment().from_string(f.read())
        text = template.render(messages=MESSAGES, add_generation_prompt=True,
                               bos_token="<|startoftext|>", eos_token="<|return|>")
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def test_greedy_completion_equals_tessera_generate(self):
        prompt = self.hf_prompt_ids()
        want = self.generate_ids(prompt, 12)
        got = self.client.completions.create(
            model="gpt-oss", prompt=prompt, max_tokens=12, temperature=0,
            extra_body={"ignore_eos": True, "skip_special_tokens": False})
        self.assertEqual(got.choices[0].text,
                         self.tokenizer.decode(want, skip_special_tokens=False))
        self.assertEqual(got.usage.prompt_tokens, len(prompt))
        self.assertEqual(got.usage.completion_tokens, 12)

    def test_chat_prompt_is_the_hf_rendering_and_tokens_match_generate(self):
        prompt = self.hf_prompt_ids()
        want = self.generate_ids(prompt, 10)
        r = self.client.chat.completions.create(
            model="gpt-oss", messages=MESSAGES, max_tokens=10, temperature=0, logprobs=True,
            extra_body={"ignore_eos": True, "skip_special_tokens": False})
        self.assertEqual(r.usage.prompt_tokens, len(prompt))
        self.assertEqual(r.usage.completion_tokens, 10)
        # The sampled tokens, one logprob entry each, are generate's greedy tokens.
        tokens = [entry.token for entry in r.choices[0].logprobs.content]
        self.assertEqual(tokens, [self.tokenizer.decode([i], skip_special_tokens=False)
                                  for i in want])

    def test_chat_stream_and_non_stream_agree(self):
        kwargs = dict(model="gpt-oss", messages=MESSAGES, max_tokens=16, temperature=0,
                      extra_body={"ignore_eos": True})
        full = self.client.chat.completions.create(**kwargs)
        self.assertEqual(full.choices[0].message.role, "assistant")
        self.assertEqual(full.choices[0].finish_reason, "length")
        content, reasoning = "", ""
        for chunk in self.client.chat.completions.create(stream=True, **kwargs):
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            content += delta.content or ""
            reasoning += getattr(delta, "reasoning_content", None) or ""
        self.assertEqual(content, full.choices[0].message.content or "")
        self.assertEqual(reasoning,
                         getattr(full.choices[0].message, "reasoning_content", None) or "")


if __name__ == "__main__":
    unittest.main(verbosity=2)
