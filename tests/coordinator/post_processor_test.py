#!/usr/bin/env python3
"""`tessera tokenize --add-special-tokens` must give exactly the ids of Hugging Face `tokenizers`'
encode(text) (add_special_tokens=True, the post_processor applied) on:
  - every Llama/Mistral/Mixtral-style tokenizer.json variant of spjson_test.py (built at test
    time from mistral_v1/tokenizer.model by transformers' LlamaConverter), carrying Mixtral's
    TemplateProcessing "<s> $A";
  - the three byte-level testdata files (qwen3, deepseek_v3, gpt_oss: ByteLevel adds nothing);
  - byte-level files edited to carry a Llama-3-style Sequence[ByteLevel, TemplateProcessing]
    (a BOS-like added token first, a multi-id special last), BertProcessing, RobertaProcessing
    and a Sequence of two templates (applied in order);
and without the flag nothing is added. SentencePiece (tokenizer.model): BOS is added as
transformers' LlamaTokenizer does (add_bos_token default true, add_eos_token from
tokenizer_config.json). An unsupported post-processor type is refused at load naming the file,
the field and the type. Env: TESSERA_BIN, TESSERA_TESTDATA.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import tokenizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenize_cli import TESSERA_BIN, TESTDATA, run_tessera  # noqa: E402
from spjson_test import CORPUS, SP_MODEL, make_variants  # noqa: E402

CASES = CORPUS[:30] + ["<|im_start|>user\nhi<|im_end|>", "<s>", "Hello world"]
BYTE_LEVEL = ("qwen3", "deepseek_v3", "gpt_oss")


QWEN3_TEXT = None


def edited_qwen3(tmp, name, post_processor):
    """A copy of the qwen3 tokenizer.json with `post_processor` replaced; returns its path.
    (The value is spliced into the file's text: re-serialising 11 MB of JSON is slow.)"""
    global QWEN3_TEXT
    if QWEN3_TEXT is None:
        with open(os.path.join(TESTDATA, "tokenizers", "qwen3", "tokenizer.json"),
                  encoding="utf-8") as f:
            QWEN3_TEXT = f.read()
    key = '"post_processor": '
    start = QWEN3_TEXT.index(key) + len(key)
    end = QWEN3_TEXT.index('"decoder": ', start)
    old = QWEN3_TEXT[start:end].rstrip().rstrip(",")
    assert json.loads(old)["type"] == "ByteLevel", old
    d = os.path.join(tmp, name)
    os.makedirs(d)
    path = os.path.join(d, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(QWEN3_TEXT[:start] + json.dumps(post_processor) + ",\n  " + QWEN3_TEXT[end:])
    return path


def template(single, specials):
    """A TemplateProcessing object: `single` lists token names and "$A"; specials: name -> ids."""
    def items(names):
        return [{"Sequence": {"id": n[1:], "type_id": 0}} if n.startswith("$")
                else {"SpecialToken": {"id": n, "type_id": 0}} for n in names]
    return {"type": "TemplateProcessing", "single": items(single),
            "pair": items(single + ["$B"] + single[-1:]),
            "special_tokens": {n: {"id": n, "ids": ids, "tokens": [n] * len(ids)}
                               for n, ids in specials.items()}}


# Mixtral-8x7B-Instruct-v0.1's tokenizer.json post_processor (transformers 5's LlamaConverter
# writes none when the slow tokenizer's add_bos_token is not given, as in spjson_test's shim).
MIXTRAL_PP = {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
               {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
             {"Sequence": {"id": "A", "type_id": 0}},
             {"SpecialToken": {"id": "<s>", "type_id": 1}},
             {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
BYTE_LEVEL_PP = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                 "use_regex": False}
# qwen3 ids: <|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645.
EDITED = {
    "llama3_style": {"type": "Sequence", "processors": [
        BYTE_LEVEL_PP,
        template(["<|im_start|>", "$A", "<|eot|>"],
                 {"<|im_start|>": [151644], "<|eot|>": [151645, 151643]})]},
    "bert": {"type": "BertProcessing", "sep": ["<|im_end|>", 151645],
             "cls": ["<|im_start|>", 151644]},
    "roberta": {"type": "RobertaProcessing", "sep": ["<|im_end|>", 151645],
                "cls": ["<|endoftext|>", 151643], "trim_offsets": True,
                "add_prefix_space": False},
    # A template after a template gets a pair (one segment per item of the first), as in
    # `tokenizers`: <|endoftext|> [<|im_start|>] <|im_end|> [text] <|im_end|>.
    "two_templates": {"type": "Sequence", "processors": [
        template(["<|im_start|>", "$A"], {"<|im_start|>": [151644]}),
        BYTE_LEVEL_PP,
        template(["<|endoftext|>", "$A", "<|im_end|>"],
                 {"<|endoftext|>": [151643], "<|im_end|>": [151645]})]},
}
T3 = template(["<|im_start|>", "$A", "<|im_end|>"], {"<|im_start|>": [151644],
                                                     "<|im_end|>": [151645]})
# Bert / Roberta after a template: every segment gets its sep (Roberta: sep..sep), the first cls.
EDITED["template_then_bert"] = {"type": "Sequence", "processors": [T3, EDITED["bert"]]}
EDITED["template_then_roberta"] = {"type": "Sequence", "processors": [T3, EDITED["roberta"]]}
EDITED["roberta_then_bert"] = {"type": "Sequence", "processors": [EDITED["roberta"],
                                                                  EDITED["bert"]]}


class PostProcessorTest(unittest.TestCase):
    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="tessera_postproc_")
        cls.paths = make_variants(cls.tmp)
        for name, path in cls.paths.items():  # The Hub files' post_processor: "<s> $A".
            with open(path, encoding="utf-8") as f:
                j = json.load(f)
            j["post_processor"] = MIXTRAL_PP
            with open(path, "w", encoding="utf-8") as f:
                json.dump(j, f, ensure_ascii=False)
        for d in BYTE_LEVEL:
            cls.paths[d] = os.path.join(TESTDATA, "tokenizers", d, "tokenizer.json")
        for name, pp in EDITED.items():
            cls.paths[name] = edited_qwen3(cls.tmp, name, pp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def check(self, name, expect_added):
        """Ids with --add-special-tokens equal encode(text), which adds `expect_added` ids."""
        path = self.paths[name]
        ref = tokenizers.Tokenizer.from_file(path)
        got = run_tessera(path, CASES, add_special_tokens=True)
        bad = []
        for text, g in zip(CASES, got):
            want = ref.encode(text).ids
            if g["ids"] != want:
                bad.append(f"{name}: ids differ for {text!r}:\n  tessera   {g['ids']}\n"
                           f"  reference {want}")
        self.assertFalse(bad, "\n".join(bad[:8]) + f"\n({len(bad)} differences)")
        added = len(ref.encode("x").ids) - len(ref.encode("x", add_special_tokens=False).ids)
        self.assertEqual(added, expect_added, name)

    def test_without_the_flag_nothing_is_added(self):
        for name in ("mixtral_hub", "llama3_style", "roberta"):
            ref = tokenizers.Tokenizer.from_file(self.paths[name])
            got = run_tessera(self.paths[name], CASES)
            for text, g in zip(CASES, got):
                self.assertEqual(g["ids"], ref.encode(text, add_special_tokens=False).ids,
                                 f"{name}: {text!r}")

    def test_llama_mistral_variants_prepend_bos(self):
        names = [n for n in self.paths if n not in BYTE_LEVEL and n not in EDITED]
        self.assertGreaterEqual(len(names), 10)
        for name in names:
            with self.subTest(name=name):
                self.check(name, expect_added=1)

    def test_byte_level_testdata_files_add_nothing(self):
        for name in BYTE_LEVEL:
            with self.subTest(name=name):
                self.check(name, expect_added=0)

    def test_llama3_style_sequence_bytelevel_template(self):
        self.check("llama3_style", expect_added=3)

    def test_bert_processing(self):
        self.check("bert", expect_added=2)

    def test_roberta_processing(self):
        self.check("roberta", expect_added=2)

    def test_sequence_of_templates_second_sees_a_pair(self):
        self.check("two_templates", expect_added=4)

    def test_bert_and_roberta_after_a_template_or_each_other(self):
        for name, added in (("template_then_bert", 6), ("template_then_roberta", 8),
                            ("roberta_then_bert", 4)):
            with self.subTest(name=name):
                self.check(name, expect_added=added)

    def sp_dir(self, name, config):
        d = os.path.join(self.tmp, name)
        os.makedirs(d)
        shutil.copy(SP_MODEL, os.path.join(d, "tokenizer.model"))
        if config is not None:
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump(config, f)
        return d

    def test_sentencepiece_follows_add_bos_and_add_eos_token(self):
        texts = ["Hello world", " x", "", "<s>[INST] hi [/INST]"]
        for name, config, bos, eos in (
                ("sp_default", None, True, False),
                ("sp_no_bos", {"add_bos_token": False}, False, False),
                ("sp_eos", {"add_eos_token": True, "bos_token": "<s>", "eos_token": "</s>"},
                 True, True)):
            with self.subTest(name=name):
                d = self.sp_dir(name, config)
                plain = run_tessera(d, texts)
                got = run_tessera(d, texts, add_special_tokens=True)
                for p, g in zip(plain, got):
                    self.assertEqual(g["ids"], [1] * bos + p["ids"] + [2] * eos)

    def test_chain_on_which_tokenizers_panics_is_refused(self):
        """A template given three segments (tokenizers: "not yet implemented" panic)."""
        path = edited_qwen3(self.tmp, "three_segments", {"type": "Sequence",
                                                         "processors": [T3, T3]})
        out = subprocess.run([TESSERA_BIN, "tokenize", "--model", path, "--text", "x"],
                             capture_output=True, timeout=60)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("post_processor.processors[1]", out.stderr.decode())
        self.assertIn("3 segments", out.stderr.decode())

    def test_unsupported_type_is_refused_naming_file_field_and_type(self):
        path = edited_qwen3(self.tmp, "unsupported", {"type": "Sequence", "processors": [
            BYTE_LEVEL_PP, {"type": "FancyProcessing"}]})
        out = subprocess.run([TESSERA_BIN, "tokenize", "--model", path, "--text", "x"],
                             capture_output=True, timeout=60)
        self.assertNotEqual(out.returncode, 0)
        err = out.stderr.decode()
        self.assertIn(path, err)
        self.assertIn("post_processor.processors[1].type", err)
        self.assertIn("FancyProcessing", err)


if __name__ == "__main__":
    unittest.main()
