#!/usr/bin/env python3
"""Llama/Mistral/Mixtral-style tokenizer.json (char-level BPE with byte_fallback) must give
exactly the ids and decoded text of Hugging Face `tokenizers` (the venv's pinned version).

The tokenizer.json files are generated here, in a temp dir, from
$TESSERA_TESTDATA/tokenizers/mistral_v1/tokenizer.model (the Mixtral SentencePiece model) by
`transformers`' LlamaConverter (legacy=True: Prepend + Replace normalizer, no pre-tokenizer, as
Mixtral's tokenizer.json on the Hub; legacy=False: Metaspace prepend_scheme "first"), and
variants of those edited as other real files have them: no prefix space (Gemma-style Replace
only, decoder without Strip), Metaspace "never" / "always" / legacy add_prefix_space with split,
the SpmConverter shape (Metaspace decoder, with and without byte_fallback: <unk> fused), and
fine-tune added tokens ([INST] special, a normalized: true token). Each variant is compared on
a corpus of edge cases + seeded random strings, with specials allowed and not
(`tokenizers`' encode_special_tokens), through `tessera tokenize --batch`: ids, decode with and
without skip_special_tokens, and the StreamingDetokenizer's text; plus decode of random id
sequences (invalid byte runs, specials between byte tokens). Env: TESSERA_BIN, TESSERA_TESTDATA.
"""

import importlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import types
import unittest
import warnings

import tokenizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenize_cli import TESSERA_BIN, TESTDATA, run_tessera  # noqa: E402
SP_MODEL = os.path.join(TESTDATA, "tokenizers", "mistral_v1", "tokenizer.model")

CORPUS = [
    "Hello world", " Hello", "Hello ", "  Hello  world  ", "a  b   c    d", "", " ", "  ",
    "     ", "\n", "\n\n", " \n ", "Hi\n\nthere\n", "\t", "a\tb\t\tc", "\r\n", "tab\t space \n",
    "trailing   ", "   leading", "x", "▁", "▁x", "x▁▁y", "▁ ▁", "<0x41>", "<unk>",
    "<s>", "</s>", "<s>Hello", "<s> Hello", "a<s>b", "a <s> b", "x</s>", "<s></s><s>",
    "<s>[INST] What is 2+2? [/INST] 4</s>", "[INST]hi[/INST]", "[INST] hi [/INST] ok",
    "<|im_start|>user\nhi<|im_end|>", "hi <|im_start|>x", "<|im_start|>", "a<|im_start|>b",
    "漢字テスト 中文分词测试：今天天气很好。", "한국어 텍스트", "Привет, мир!", "مرحبا بالعالم",
    "नमस्ते दुनिया", "สวัสดีชาวโลก", "😀", "👨‍👩‍👧‍👦 👍🏽 🏳️‍🌈", "🇺🇸🇯🇵 1️⃣",
    "𝕏𝕐𝕑 𓀀 𒀀 ꙮ", "e\u0301 a\u0300\u0301 n\u0303", "café cafe\u0301", "ﬁ ｆｕｌｌ ①②③",
    "\u00a0nbsp\u3000ideo\u200bzwsp\u2028ls\ufeffbom", "\ufffd \uffff \ue000 \U0010fffd",
    "\x00nul \x1b[31mansi\x1b[0m \x7f", "0123456789 3.14159 1,000,000 -42 1e-10 0x7fff",
    "12345678901234567890123456789012345678901234567890",
    "def f(x):\n    return x ** 2  # square\n\n\tif x:\n\t\tpass\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // C++\r\n",
    "{\"key\": [1, 2, {\"nested\": null}], \"s\": \"a\\\"b\"}",
    "Pneumonoultramicroscopicsilicovolcanoconiosis " * 3,
    "supercalifragilisticexpialidocious" * 20,
    "a" * 300, " " * 50, "ab " * 100, "\n" * 30, "😀" * 40, "ÿ" * 17,
    "I'm fine, they'll see; we've done it, you'd know. Don't!",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX.",
]


def random_corpus(seed, n):
    rng = random.Random(seed)
    alphabet = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") +
                list(" \t\n\r.,;:!?'\"()[]{}<>|/\\-_=+*&^%$#@~`") + [" ", "  ", "   "] +
                ["'s", " the", " and", "ing", "▁", "▁▁"] +
                list("中文字日本語カタカナ한국어漢") + ["é", "e\u0301", "ß", "ø", "ñ", "\u0301"] +
                ["😀", "👍🏽", "\u200d", "\u00a0", "\u3000", "\u200b", "\u2028", "١٢٣", "ไทย",
                 "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<|im_start|>", "<0x41>"])

    def rand_char():
        cp = rng.randint(0x20, 0x2FFFF)
        while 0xD800 <= cp <= 0xDFFF:
            cp = rng.randint(0x20, 0x2FFFF)
        return chr(cp)

    out = []
    for _ in range(n):
        parts = [rng.choice(alphabet) if rng.random() < 0.85 else rand_char()
                 for _ in range(rng.randint(1, 40))]
        out.append("".join(parts))
    return out


CASES = CORPUS + random_corpus(20261124, 300)


SPLIT_BEHAVIORS = ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]


def convert(legacy):
    """tokenizer.json text made by transformers' LlamaConverter from the SentencePiece model."""
    warnings.filterwarnings("ignore")
    cst = importlib.import_module("transformers.convert_slow_tokenizer")
    if hasattr(cst, "SentencePieceExtractor"):
        # transformers 5.15's SpmConverter passes the scores where the extractor expects a
        # model type; extract vocab + score-ordered merges as transformers 4.x did.
        class Extractor(cst.SentencePieceExtractor):
            def extract(self, vocab_scores=None):
                vocab = {p.piece: i for i, p in enumerate(self.proto.pieces)}
                return vocab, cst.generate_merges(vocab, vocab_scores)

        cst.LlamaConverter.SpmExtractor = Extractor
    shim = types.SimpleNamespace(
        vocab_file=SP_MODEL, legacy=legacy, add_prefix_space=True,
        convert_ids_to_tokens=lambda i: ["<unk>", "<s>", "</s>"][i])
    return cst.LlamaConverter(shim).converted().to_str()


def make_variants(tmp):
    """name -> path of a tokenizer.json."""
    legacy_text, first_text = convert(True), convert(False)
    legacy, first = json.loads(legacy_text), json.loads(first_text)
    text_of = {id(legacy): legacy_text, id(first): first_text}
    assert legacy["normalizer"]["normalizers"][0]["type"] == "Prepend", legacy["normalizer"]
    assert legacy["pre_tokenizer"] is None
    assert first["pre_tokenizer"]["prepend_scheme"] == "first", first["pre_tokenizer"]
    assert legacy["model"]["byte_fallback"] is True
    variants = {"llama_legacy": legacy, "llama_first": first}

    def derive(name, base, edit):
        j = json.loads(text_of[id(base)])  # A fresh copy (much faster than deepcopy).
        edit(j)
        variants[name] = j

    def hub(j):  # As Mixtral's file: <unk> is an added special token too, "a b" merges.
        j["added_tokens"].insert(0, {"id": 0, "content": "<unk>", "single_word": False,
                                     "lstrip": False, "rstrip": False, "normalized": False,
                                     "special": True})
        j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
    derive("mixtral_hub", legacy, hub)

    def normalized_specials(j):  # Older Llama files: <s> / </s> with normalized: true.
        for t in j["added_tokens"]:
            t["normalized"] = True
    derive("normalized_specials", legacy, normalized_specials)

    def no_prefix(j):  # Gemma-style: Replace only, no Strip in the decoder.
        j["normalizer"] = {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
        j["decoder"]["decoders"] = j["decoder"]["decoders"][:3]
    derive("replace_only", legacy, no_prefix)

    def scheme(value, split=False):
        def edit(j):
            j["pre_tokenizer"]["prepend_scheme"] = value
            j["pre_tokenizer"]["split"] = split
            if value == "never":
                j["decoder"]["decoders"] = j["decoder"]["decoders"][:3]
        return edit
    derive("metaspace_never", first, scheme("never"))
    derive("metaspace_always", first, scheme("always"))

    def legacy_aps(j):  # Old files: add_prefix_space instead of prepend_scheme (split: true).
        j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "add_prefix_space": True}
    derive("metaspace_legacy_aps", first, legacy_aps)

    def spm_shape(byte_fallback):  # SpmConverter: Strip + Regex Replace, Metaspace both ways.
        def edit(j):
            j["normalizer"] = {"type": "Sequence", "normalizers": [
                {"type": "Strip", "strip_left": False, "strip_right": True},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": "▁"}]}
            ms = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                  "split": True}
            j["pre_tokenizer"] = ms
            j["decoder"] = dict(ms)
            j["model"]["byte_fallback"] = byte_fallback
        return edit
    derive("spm_metaspace_bf", first, spm_shape(True))
    derive("spm_metaspace_unk", first, spm_shape(False))

    def gemma(j):  # GemmaConverter's shape: Replace normalizer, Split " " (a no-op after it).
        j["normalizer"] = {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
        j["pre_tokenizer"] = {"type": "Split", "pattern": {"String": " "},
                              "behavior": "MergedWithPrevious", "invert": False}
        j["decoder"]["decoders"] = j["decoder"]["decoders"][:3]
    derive("gemma_shape", legacy, gemma)

    for behavior in SPLIT_BEHAVIORS:
        def split(j, behavior=behavior):
            j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": "[0-9]+|[.,!?]| (?=[A-Z])"},
                 "behavior": behavior, "invert": behavior == "Contiguous"},
                j["pre_tokenizer"]]}
        derive(f"split_{behavior}", first, split)

    def finetune(j):  # Added tokens past the model vocabulary, as chat fine-tunes add them.
        n = len(j["model"]["vocab"])
        j["added_tokens"] += [
            {"id": n, "content": "[INST]", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True},
            {"id": n + 1, "content": "[/INST]", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True},
            {"id": n + 2, "content": "<|im_start|>", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": True, "special": False},
            {"id": n + 3, "content": "<|im_end|>", "single_word": False, "lstrip": False,
             "rstrip": True, "normalized": False, "special": True}]
    derive("finetune_legacy", legacy, finetune)
    derive("finetune_first", first, finetune)

    paths = {}
    for name, j in variants.items():
        d = os.path.join(tmp, name)
        os.makedirs(d)
        paths[name] = os.path.join(d, "tokenizer.json")
        with open(paths[name], "w", encoding="utf-8") as f:
            f.write(text_of.get(id(j)) or json.dumps(j, ensure_ascii=False))
    return paths




class SpTokenizerJsonTest(unittest.TestCase):
    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="tessera_spjson_")
        cls.paths = make_variants(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def compare_decodings(self, name, ref, key, got, ids, bad):
        for skip, field in ((False, "text"), (True, "text_skip_special"),
                            (False, "stream"), (True, "stream_skip_special")):
            want = ref.decode(ids, skip_special_tokens=skip)
            if got[field] != want:
                bad.append(f"{name} {field} differs for {key!r} (ids {ids[:40]}):\n"
                           f"  tessera   {got[field]!r}\n  reference {want!r}")

    def check_variant(self, name, cases=CASES):
        path = self.paths[name]
        ref = tokenizers.Tokenizer.from_file(path)
        bad = []
        for special in (True, False):
            ref.encode_special_tokens = not special
            got = run_tessera(path, cases, special)
            self.assertEqual(len(got), len(cases))
            for text, g in zip(cases, got):
                want = ref.encode(text, add_special_tokens=False).ids
                if g["ids"] != want:
                    bad.append(f"{name} special={special} ids differ for {text!r}:\n"
                               f"  tessera   {g['ids']}\n  reference {want}\n"
                               f"  ref tokens {ref.encode(text, add_special_tokens=False).tokens}")
                    continue
                self.compare_decodings(name, ref, text, g, want, bad)
        self.assertFalse(bad, "\n".join(bad[:8]) + f"\n({len(bad)} differences)")

    def test_mixtral_hub_legacy_prepend_replace(self):
        self.check_variant("mixtral_hub")

    def test_llama_legacy_converter_output(self):
        self.check_variant("llama_legacy")

    def test_llama_metaspace_first(self):
        self.check_variant("llama_first")

    def test_replace_only_normalizer(self):
        self.check_variant("replace_only")

    def test_metaspace_never(self):
        self.check_variant("metaspace_never")

    def test_metaspace_always(self):
        self.check_variant("metaspace_always")

    def test_metaspace_legacy_add_prefix_space_split(self):
        self.check_variant("metaspace_legacy_aps")

    def test_spm_shape_metaspace_decoder_byte_fallback(self):
        self.check_variant("spm_metaspace_bf")

    def test_spm_shape_unk_fused_without_byte_fallback(self):
        self.check_variant("spm_metaspace_unk")

    def test_added_specials_matched_after_normalization(self):
        self.check_variant("normalized_specials")

    def test_gemma_shape_replace_and_split_on_space(self):
        self.check_variant("gemma_shape")

    def test_split_pre_tokenizer_behaviors_before_metaspace(self):
        for behavior in SPLIT_BEHAVIORS:
            with self.subTest(behavior=behavior):
                self.check_variant(f"split_{behavior}", CASES[:200])

    def test_finetune_added_tokens_legacy(self):
        self.check_variant("finetune_legacy")

    def test_finetune_added_tokens_metaspace_first(self):
        self.check_variant("finetune_first")

    def test_decode_random_id_sequences(self):
        """Byte runs (valid, truncated, invalid), specials inside runs, lone "▁" first."""
        rng = random.Random(7)
        byte = lambda b: b + 3  # <0x00> is id 3 in this vocabulary.
        pool = ([byte(b) for b in (0x20, 0x41, 0x0A, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98,
                                   0x80, 0xFF, 0xC0, 0xED, 0xA0)] +
                [0, 1, 2, 28705, 259, 22557, 1526, 28723, 13, 35] +
                [rng.randint(3, 31999) for _ in range(20)])
        seqs = [[byte(0xE2), byte(0x82), byte(0xAC)], [byte(0xE2), byte(0x82), byte(0xAC),
                                                       byte(0xFF)],
                [byte(0xE2), byte(0x82)], [byte(0xE2), byte(0x82), 1, byte(0xAC)],
                [byte(0x20), 22557], [byte(0x20)], [28705], [28705, 22557], [1, 28705, 22557],
                [1, 22557], [259, 259], [2, byte(0x20), byte(0xFF)], []]
        seqs += [[rng.choice(pool) for _ in range(rng.randint(1, 12))] for _ in range(300)]
        bad = []
        for name in ("mixtral_hub", "llama_first", "replace_only", "spm_metaspace_bf"):
            ref = tokenizers.Tokenizer.from_file(self.paths[name])
            got = run_tessera(self.paths[name], seqs)
            for ids, g in zip(seqs, got):
                self.assertEqual(g["ids"], ids)
                self.compare_decodings(name, ref, ids, g, ids, bad)
        self.assertFalse(bad, "\n".join(bad[:8]) + f"\n({len(bad)} differences)")

    def test_long_text_is_not_quadratic(self):
        """100 KB without newlines is one BPE word for the legacy file: ids equal, fast."""
        rng = random.Random(3)
        words = ["the", "quick", "brown", "fox", "漢字", "😀", "tokenization", "x" * 30, "é"]
        text = " ".join(rng.choice(words) for _ in range(20000))[:100000]
        path = self.paths["mixtral_hub"]
        ref = tokenizers.Tokenizer.from_file(path)
        start = time.monotonic()
        got = run_tessera(path, [text, text + text])
        elapsed = time.monotonic() - start
        self.assertEqual(got[0]["ids"], ref.encode(text, add_special_tokens=False).ids)
        self.assertEqual(got[0]["text"], ref.decode(got[0]["ids"]))
        self.assertEqual(got[1]["ids"], ref.encode(text + text, add_special_tokens=False).ids)
        self.assertLess(elapsed, 10.0, f"300 KB took {elapsed:.1f} s")

    def test_directory_prefers_tokenizer_json_without_warning(self):
        d = os.path.join(self.tmp, "model_dir")
        os.makedirs(d, exist_ok=True)
        shutil.copy(self.paths["mixtral_hub"], os.path.join(d, "tokenizer.json"))
        shutil.copy(SP_MODEL, os.path.join(d, "tokenizer.model"))
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump({"bos_token": "<s>", "eos_token": "</s>"}, f)
        out = subprocess.run([TESSERA_BIN, "tokenize", "--model", d, "--text", "[INST] 漢 hi",
                              "--json"], capture_output=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertNotIn("instead", out.stderr.decode())
        ref = tokenizers.Tokenizer.from_file(self.paths["mixtral_hub"])
        self.assertEqual(json.loads(out.stdout)["ids"],
                         ref.encode("[INST] 漢 hi", add_special_tokens=False).ids)

    def test_unsupported_component_error_names_file_and_field(self):
        with open(self.paths["llama_first"], encoding="utf-8") as f:
            j = json.load(f)
        j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, j["pre_tokenizer"]]}
        path = os.path.join(self.tmp, "unsupported.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False)
        out = subprocess.run([TESSERA_BIN, "tokenize", "--model", path, "--text", "x"],
                             capture_output=True, timeout=60)
        self.assertNotEqual(out.returncode, 0)
        err = out.stderr.decode()
        self.assertIn(path, err)
        self.assertIn("pre_tokenizer.type", err)
        self.assertIn("Digits", err)


if __name__ == "__main__":
    unittest.main()
