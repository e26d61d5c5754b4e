#!/usr/bin/env python3
"""Token ids of `tessera tokenize` must be identical to the reference libraries', in this run.

References (all in the test venv, scripts/python_env.sh):
  qwen3, deepseek_v3, gpt_oss  tokenizer.json with Hugging Face `tokenizers`
                               (encode(text, add_special_tokens=False); specials off:
                               encode_special_tokens = True). The three post-processors are
                               ByteLevel, which adds no ids: checked (add_special_tokens=True
                               gives the same ids).
  mistral_v1                   tokenizer.model with python `sentencepiece` (encode; specials
                               on: "<s>", "</s>", "<unk>" split out first, each part encoded
                               on its own, as Tessera documents).
  kimi_tiktoken                a Kimi K2-layout directory built here: tiktoken.model from
                               gpt-oss's byte-level vocabulary (o200k ranks) plus
                               tokenizer_config.json added_tokens_decoder; reference `tiktoken`
                               with Kimi's pattern and its 256 reserved special ids.
Corpus: hand-written cases (multilingual, emoji ZWJ/skin tones, code, whitespace runs, digits,
special-token look-alikes, normalization, odd code points) + seeded random strings. For each
case both ids (specials allowed and not) and the round trip (Tessera's decode of its ids ==
reference decode of the reference ids) must match. Env: TESSERA_BIN, TESSERA_TESTDATA.
"""

import base64
import json
import os
import random
import subprocess
import sys
import tempfile
import unittest

import sentencepiece
import tiktoken
import tokenizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenize_cli import TESSERA_BIN, TESTDATA, run_tessera  # noqa: E402
TOKDIR = os.path.join(TESTDATA, "tokenizers")

CORPUS = [
    "Hello, world! How's it going? I'm fine, they'll see; we've done it, you'd know.",
    "中文分词测试：今天天气很好，我们去公园散步吧。",
    "日本語のテキストです。カタカナとひらがな、漢字。",
    "한국어 텍스트와 띄어쓰기",
    "مرحبا بالعالم! كيف حالك؟",
    "नमस्ते दुनिया, यह हिन्दी पाठ है।",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง",
    "Привет, мир! Ёлка и ёжик.",
    "Ελληνικά κείμενα με τόνους",
    "emoji: 👨‍👩‍👧‍👦 👍🏽 👋🏿 🏳️‍🌈 🧑🏻‍💻 ❤️ 😀😃😄",
    "flags 🇺🇸🇯🇵🇩🇪 keycap 1️⃣ #️⃣",
    "def f(x):\n    return x ** 2  # square\n\n\tif x:\n\t\tpass\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // C++\r\n",
    "    leading spaces",
    "trailing spaces    ",
    "a  b   c    d\t\te\n\n\nf \n \n g",
    "\n\n\n\n",
    "\t \t \t",
    " ",
    "",
    "12345678901234567890123456789012345678901234567890",
    "3.14159265358979 1,000,000 0x7fffffff 1e-10 -42",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start",
    "<|endoftext|>",
    "<|endoftext|",
    "<|end_of_text|> <|startoftext|> <|return|> <|channel|>analysis<|message|>",
    "<｜begin▁of▁sentence｜>User<｜Assistant｜>",
    "<s>[INST] hi [/INST]</s> <unk>",
    "[BOS]text[EOS]<|im_end|><|im_user|>",
    "<think>reasoning</think>answer",
    "café cafe\u0301 e\u0301\u0302 Å Å Ω Ω ﬁ ｆｕｌｌ",
    "ﾊﾝｶｸ ｶﾀｶﾅ ㍻ ①②③ ⅷ",
    "\u00a0nbsp\u3000ideographic\u200bzwsp\u2028ls\u2029ps\ufeffbom",
    "\ufffd replacement \uffff nonchar \ue000 private \U0010fffd",
    "\x00nul \x1b[31mansi\x1b[0m \x7f del",
    "𝕏𝕐𝕑 𓀀𓀁 𒀀 ꙮ ᚠᛇᚻ",
    "don't DON'T Don'T it's IT'S",
    "https://example.com/path?query=1&x=y#frag user@example.com",
    "mixed中English文本with数字123和emoji😀",
    "ALLCAPS CamelCase snake_case kebab-case",
    "\"quoted\" 'single' `backtick` «guillemets» „low“",
    "a" * 300,
    " " * 70 + "x",
    "ab" * 100 + "\n" * 20 + "!" * 50,
]


def random_corpus(seed, n):
    rng = random.Random(seed)
    alphabet = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") +
                list(" \t\n\r.,;:!?'\"()[]{}<>|/\\-_=+*&^%$#@~`") +
                ["'s", "'t", "'re", "'ll", " the", " and"] +
                list("中文字日本語カタカナひらがな한국어") + ["é", "e\u0301", "ß", "ø", "ñ"] +
                ["😀", "👍🏽", "‍", "\u00a0", "\u3000", "\u200b", "\u2028", "١٢٣", "ไทย",
                 "हिन्दी", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "[BOS]"])
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(n)]


CASES = CORPUS + random_corpus(1234, 300)




def byte_decoder():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
          list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


# Kimi K2's pre-tokenizer pattern (tokenization_kimi.py), in tiktoken's regex dialect.
KIMI_PAT = "|".join([
    r"""[\p{Han}]+""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*"""
    r"""[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+"""
    r"""[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
KIMI_SPECIALS = ["[BOS]", "[EOS]", "<|im_end|>", "<|im_user|>", "<|im_assistant|>",
                 "<|start_header_id|>", "<|end_header_id|>", "[EOT]", "<|im_system|>",
                 "<|im_middle|>"]


def make_kimi_dir(tmp):
    """tiktoken.model + tokenizer_config.json from gpt-oss's vocabulary; the tiktoken reference."""
    with open(os.path.join(TOKDIR, "gpt_oss", "tokenizer.json"), encoding="utf-8") as f:
        j = json.load(f)
    dec = byte_decoder()
    ranks = {}
    for tok, rank in j["model"]["vocab"].items():
        ranks[bytes(dec[c] for c in tok)] = rank
    with open(os.path.join(tmp, "tiktoken.model"), "w") as f:
        for b, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(f"{base64.b64encode(b).decode()} {rank}\n")
    num_base = len(ranks)
    decoder = {str(num_base + i): {"content": s, "special": True}
               for i, s in enumerate(KIMI_SPECIALS)}
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "[BOS]", "eos_token": "[EOS]",
                   "added_tokens_decoder": decoder}, f)
    specials = {decoder.get(str(i), {"content": f"<|reserved_token_{i}|>"})["content"]: i
                for i in range(num_base, num_base + 256)}
    return tiktoken.Encoding(name="kimi_test", pat_str=KIMI_PAT, mergeable_ranks=ranks,
                             special_tokens=specials)


class TokenizerReferenceTest(unittest.TestCase):
    maxDiff = 4000

    def check(self, name, model, ref_encode, ref_decode, special):
        got = run_tessera(model, CASES, special)
        self.assertEqual(len(got), len(CASES))
        bad = []
        for text, g in zip(CASES, got):
            want = ref_encode(text, special)
            if g["ids"] != want:
                bad.append(f"{name} special={special} ids differ for {text!r}:\n"
                           f"  tessera   {g['ids']}\n  reference {want}")
                continue
            if ref_decode is not None and g["text"] != ref_decode(want):
                bad.append(f"{name} special={special} decode differs for {text!r}: "
                           f"{g['text']!r} vs {ref_decode(want)!r}")
        self.assertFalse(bad, "\n".join(bad[:10]) + f"\n({len(bad)} of {len(CASES)} differ)")

    def check_hf(self, name):
        tok = tokenizers.Tokenizer.from_file(os.path.join(TOKDIR, name, "tokenizer.json"))

        def encode(text, special):
            tok.encode_special_tokens = not special
            ids = tok.encode(text, add_special_tokens=False).ids
            # The ByteLevel post-processors add nothing: both settings give the same ids.
            self.assertEqual(tok.encode(text, add_special_tokens=True).ids, ids)
            return ids

        def decode(ids):
            return tok.decode(ids, skip_special_tokens=False)

        for special in (True, False):
            self.check(name, os.path.join(TOKDIR, name), encode, decode, special)

    def test_qwen3(self):
        self.check_hf("qwen3")

    def test_deepseek_v3(self):
        self.check_hf("deepseek_v3")

    def test_gpt_oss(self):
        self.check_hf("gpt_oss")

    def test_added_token_flags(self):
        """lstrip / rstrip / single_word added tokens (none of the real files use them): qwen3's
        tokenizer.json plus flagged tokens, against `tokenizers` on the same file."""
        with open(os.path.join(TOKDIR, "qwen3", "tokenizer.json"), encoding="utf-8") as f:
            j = json.load(f)
        base = max(a["id"] for a in j["added_tokens"]) + 1
        flagged = [("<L>", dict(lstrip=True)), ("<R>", dict(rstrip=True)),
                   ("<W>", dict(single_word=True)), ("<LR>", dict(lstrip=True, rstrip=True)),
                   ("wordy", dict(single_word=True)), ("<SP>", dict(special=True, lstrip=True)),
                   ("<SPR>", dict(special=True, rstrip=True))]
        for k, (content, flags) in enumerate(flagged):
            entry = dict(id=base + k, content=content, single_word=False, lstrip=False,
                         rstrip=False, normalized=False, special=False)
            entry.update(flags)
            j["added_tokens"].append(entry)
        texts = ["a <L> b", "a   <L>b", "a<R>   b", "x <W> y", "x<W> y", "x_<W>", "é<W>", "1<W>",
                 "a  <LR>  b", "wordy", "a wordy b", "awordy", "wordy_", "wordy.", "<L><L>",
                 "  <L>", "<R>\n\n", "\t<L>", "a\u00a0<L>", "<SP>  x", " <SP>", "<R> <L>",
                 "<R>  <LR>  <L>", "中<W>", "<W>中", "x <SPR>  y", "<|im_start|> <L>"]
        texts += [f"{t} <L> {u}<R> <W> wordy" for t, u in zip(CORPUS[:10], CORPUS[10:20])]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "tokenizer.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(j, f, ensure_ascii=False)
            tok = tokenizers.Tokenizer.from_file(path)
            for special in (True, False):
                got = run_tessera(path, texts, special)
                tok.encode_special_tokens = not special
                for text, g in zip(texts, got):
                    want = tok.encode(text, add_special_tokens=False).ids
                    self.assertEqual(g["ids"], want, f"{text!r} special={special}")
                    self.assertEqual(g["text"], tok.decode(want, skip_special_tokens=False))

    def test_mistral_v1_sentencepiece(self):
        model = os.path.join(TOKDIR, "mistral_v1", "tokenizer.model")
        sp = sentencepiece.SentencePieceProcessor(model_file=model)
        specials = {"<s>": sp.bos_id(), "</s>": sp.eos_id(), "<unk>": sp.unk_id()}

        def encode(text, special):
            if not special:
                return sp.encode(text)
            ids, start, i = [], 0, 0
            while i < len(text):
                hit = next((s for s in specials if text.startswith(s, i)), None)
                if hit is None:
                    i += 1
                    continue
                if i > start:
                    ids += sp.encode(text[start:i])
                ids.append(specials[hit])
                i += len(hit)
                start = i
            if start < len(text):
                ids += sp.encode(text[start:])
            return ids

        self.check("mistral_v1", model, encode, sp.decode, special=False)
        # With specials Tessera renders "<s>" as text where SentencePiece's decode hides it:
        # ids only.
        self.check("mistral_v1", model, encode, None, special=True)

    def test_mistral_v1_samples(self):
        """mistral-common v1 renderings (only no_tools has one; the v2/v3 renderings use the
        32768-piece tokenizer, not in testdata): BOS, the text between control tokens encoded on
        its own ("▁" = space, the leading one being the dummy prefix Encode adds), EOS after
        each answer. [INST] is plain text in v1 ("▁[", "INST", "]")."""
        sample_dir = os.path.join(TESTDATA, "mistral_v1", "samples")
        model = os.path.join(TOKDIR, "mistral_v1", "tokenizer.model")
        names = sorted(d for d in os.listdir(sample_dir)
                       if os.path.isfile(os.path.join(sample_dir, d, "text_v1.txt")))
        self.assertGreaterEqual(len(names), 1)
        for name in names:
            with open(os.path.join(sample_dir, name, "text_v1.txt"), encoding="utf-8") as f:
                rendered = f.read()
            with open(os.path.join(sample_dir, name, "tokens_v1.json")) as f:
                want = json.load(f)["tokens"]
            # Segments: control tokens and the text between them; in the text, "▁" is a space
            # and each segment's first "▁" is the dummy prefix Encode adds back.
            segments, ids_layout = [], []
            for part in rendered.replace("</s>", "\x00</s>\x00").replace("<s>", "\x00<s>\x00") \
                    .split("\x00"):
                if part in ("<s>", "</s>"):
                    ids_layout.append(part)
                elif part:
                    text = part.replace("▁", " ")
                    self.assertTrue(text.startswith(" "), (name, part))
                    ids_layout.append(len(segments))
                    segments.append(text[1:])
            got = run_tessera(model, segments, special=False)
            ids = []
            for item in ids_layout:
                ids += [1] if item == "<s>" else [2] if item == "</s>" else got[item]["ids"]
            self.assertEqual(ids, want, name)

    def test_kimi_tiktoken(self):
        with tempfile.TemporaryDirectory() as tmp:
            enc = make_kimi_dir(tmp)

            def encode(text, special):
                if special:
                    return enc.encode(text, allowed_special="all")
                return enc.encode(text, disallowed_special=())

            for special in (True, False):
                self.check("kimi_tiktoken", tmp, encode, enc.decode, special)

            # Kimi's encode chunking: 400k-character chunks, runs of (non-)whitespace cut at 25k
            # characters, each part encoded on its own.
            def kimi_split(s, max_run=25000):
                run, run_is_space, start = 0, s[0].isspace() if s else False, 0
                for i, ch in enumerate(s):
                    if run_is_space ^ ch.isspace():
                        run, run_is_space = 1, ch.isspace()
                    else:
                        run += 1
                        if run > max_run:
                            yield s[start:i]
                            start, run = i, 1
                yield s[start:]

            def kimi_encode(s):
                return [i for k in range(0, len(s), 400000)
                        for part in kimi_split(s[k:k + 400000])
                        for i in enc.encode(part, allowed_special="all")]

            rng = random.Random(7)
            words = ["lorem", "ipsum", "中文", "😀", "12345", "x" * 7, "[EOS]"]
            long_texts = [
                "a" * 60000,
                " " * 30000 + "tail",
                "ab" * 20000 + " " * 26000 + "\u3000" * 10 + "c" * 25001,
                " ".join(rng.choice(words) for _ in range(90000)),  # Over 400k characters.
            ]
            self.assertGreater(len(long_texts[-1]), 400000)
            got = run_tessera(tmp, long_texts, special=True)
            for text, g in zip(long_texts, got):
                self.assertEqual(g["ids"], kimi_encode(text), text[:40])

    def test_plain_output_lists_ids_and_tokens(self):
        out = subprocess.run([TESSERA_BIN, "tokenize", "--model", os.path.join(TOKDIR, "qwen3"),
                              "--text", "Hello world"], check=True, capture_output=True,
                             timeout=120).stdout.decode()
        lines = out.splitlines()
        self.assertEqual(lines[0], "9707 1879")
        self.assertEqual(lines[1:], ["9707\tHello", "1879\tĠworld"])

    def test_decode_flag_skips_specials(self):
        out = subprocess.run([TESSERA_BIN, "tokenize", "--model", os.path.join(TOKDIR, "qwen3"),
                              "--decode", "151644,9707,151645", "--skip-special", "--json"],
                             check=True, capture_output=True, timeout=120).stdout
        self.assertEqual(json.loads(out), {"text": "Hello"})

    def test_bad_model_path_is_a_clear_error(self):
        r = subprocess.run([TESSERA_BIN, "tokenize", "--model", "/nonexistent/dir", "--text",
                            "x"], capture_output=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("/nonexistent/dir", r.stderr.decode())


if __name__ == "__main__":
    if not TESSERA_BIN:
        sys.exit("TESSERA_BIN is not set (run through ctest)")
    unittest.main(verbosity=2)
