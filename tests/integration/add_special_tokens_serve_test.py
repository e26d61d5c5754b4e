"""BOS handling of a real `tessera serve` with a Mistral-style tokenizer.json (TemplateProcessing
"<s> $A", as Mixtral's Hub file), as vLLM does it:
  - /v1/completions with a string prompt applies the post-processor (add_special_tokens defaults
    to true): usage.prompt_tokens counts the BOS; `"add_special_tokens": false` removes it;
    token-id prompts are never changed;
  - /v1/chat/completions does not (the chat template renders "<s>"), so the BOS is not doubled;
    `"add_special_tokens": true` asks for the post-processor there too.
The tokenizer.json is made at test time from mistral_v1/tokenizer.model by transformers'
LlamaConverter (tests/coordinator/spjson_test.py); the tiny random-weight llama checkpoint comes
from `tessera make-model --tokenizer DIR`. Env: TESSERA_BIN, TESSERA_TESTDATA.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

import tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "coordinator"))
from spjson_test import convert  # noqa: E402
from post_processor_test import MIXTRAL_PP  # noqa: E402
sys.path.insert(0, HERE)
from serve_process import ServeProcess  # noqa: E402

BIN = os.environ["TESSERA_BIN"]
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
                 "[INST] {{ m['content'] }} [/INST]{% else %}{{ m['content'] }}{{ eos_token }}"
                 "{% endif %}{% endfor %}")


class AddSpecialTokensServeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="add_special_tokens_")
        tok_dir = os.path.join(cls.tmp.name, "tok")
        os.makedirs(tok_dir)
        j = json.loads(convert(True))
        j["post_processor"] = MIXTRAL_PP
        cls.tok_json = os.path.join(tok_dir, "tokenizer.json")
        with open(cls.tok_json, "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False)
        with open(os.path.join(tok_dir, "tokenizer_config.json"), "w") as f:
            json.dump({"bos_token": "<s>", "eos_token": "</s>", "chat_template": CHAT_TEMPLATE},
                      f)
        cls.ref = tokenizers.Tokenizer.from_file(cls.tok_json)
        model = os.path.join(cls.tmp.name, "tiny")
        r = subprocess.run([BIN, "make-model", "--arch", "llama", "--preset", "tiny", "--seed",
                            "5", "--tokenizer", tok_dir, "--out", model],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        cls.serve = ServeProcess(model, "tiny", cls.tmp.name)
        cls.base = cls.serve.base

    @classmethod
    def tearDownClass(cls):
        cls.serve.stop()
        cls.tmp.cleanup()

    def post(self, path, body):
        body = dict(body, model="tiny", max_tokens=1, temperature=0)
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{path} {body}: {e.code} {e.read()!r}")

    def test_completion_string_prompt_gets_bos_by_default(self):
        text = "Hello world, how are you?"
        want = self.ref.encode(text).ids  # add_special_tokens=True, as vLLM's completions
        self.assertEqual(want[0], 1)
        out = self.post("/v1/completions", {"prompt": text})
        self.assertEqual(out["usage"]["prompt_tokens"], len(want))

    def test_completion_add_special_tokens_false_removes_bos(self):
        text = "Hello world, how are you?"
        want = self.ref.encode(text, add_special_tokens=False).ids
        out = self.post("/v1/completions", {"prompt": text, "add_special_tokens": False})
        self.assertEqual(out["usage"]["prompt_tokens"], len(want))

    def test_completion_token_id_prompt_is_unchanged(self):
        out = self.post("/v1/completions", {"prompt": [22557, 1526]})
        self.assertEqual(out["usage"]["prompt_tokens"], 2)

    def test_chat_does_not_double_bos(self):
        messages = [{"role": "user", "content": "What is 2+2?"}]
        rendered = "<s>[INST] What is 2+2? [/INST]"
        want = self.ref.encode(rendered, add_special_tokens=False).ids
        self.assertEqual(want.count(1), 1)
        out = self.post("/v1/chat/completions", {"messages": messages})
        self.assertEqual(out["usage"]["prompt_tokens"], len(want))
        out = self.post("/v1/chat/completions", {"messages": messages,
                                                 "add_special_tokens": True})
        self.assertEqual(out["usage"]["prompt_tokens"], len(want) + 1)

    def test_add_special_tokens_must_be_a_bool(self):
        req = urllib.request.Request(
            self.base + "/v1/completions",
            data=json.dumps({"model": "tiny", "prompt": "x", "max_tokens": 1,
                             "add_special_tokens": "yes"}).encode(),
            headers={"Content-Type": "application/json"})
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=60)
        self.assertEqual(cm.exception.code, 400)
        self.assertIn("add_special_tokens", cm.exception.read().decode())


if __name__ == "__main__":
    unittest.main()
