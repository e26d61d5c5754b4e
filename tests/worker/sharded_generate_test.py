"""Tensor / expert / data / pipeline parallel generation over Gloo equals the single rank.

For every family's tiny preset (f32), `tessera generate --tp T --ep E --dp D --pp P` starts
P * max(T * D, E) ranks on 127.0.0.1 (worker/generate_command.cc) and must give the same greedy
tokens as one rank, with logits within 1e-4 (relative L2) at every generated position. Layouts the model cannot take
(heads or experts not divisible) must be refused before any weight is loaded, naming the reason.
A rank killed mid-run makes the command fail well within the collective timeout.
gpt-oss in the MXFP4 release format (make-model --dtype mxfp4) is checked the same way on the
layouts it admits; splitting its experts into parts that are not whole MX blocks of 32 is refused
by name.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

BIN = os.environ["TESSERA_BIN"]
ARCHS = ["qwen3_moe", "qwen2_moe", "mixtral", "deepseek_v3", "glm4_moe", "minimax_m2", "gpt_oss",
         "llama", "qwen3"]
# (tp, ep, dp, pp): world = pp * max(tp * dp, ep) ranks (docs/sharding.md). dp > 1 is
# data-parallel attention with all-to-all expert dispatch (the prompt is DP rank 0's; the other
# DP ranks join every MoE layer with zero tokens), tp inside a DP rank splits its attention;
# pp > 1 pipeline stages, each with its own tp / ep / dp ranks.
LAYOUTS = [(2, 1, 1, 1), (2, 2, 1, 1), (1, 2, 1, 1), (4, 1, 1, 1), (4, 4, 1, 1), (1, 4, 1, 1),
           (1, 2, 2, 1), (1, 4, 4, 1), (1, 1, 1, 2), (1, 1, 1, 4),
           (2, 4, 2, 1), (2, 1, 1, 2), (2, 2, 1, 2), (1, 2, 1, 2), (1, 2, 2, 2)]
PROMPT = "3,1,4,1,5,9,2,6,5,3,5"
GPT_OSS_20B = os.path.join(os.environ.get("TESSERA_TESTDATA", ""), "configs",
                           "openai__gpt-oss-20b", "config.json")
# MXFP4 checkpoints: the tiny preset (expert width 32: one MX block, so ep only) and gpt-oss-20b
# scaled to hidden 64 (expert width 64: two blocks, so tp 2 may split experts).
MXFP4_MODELS = {
    "mxfp4_tiny": ["--arch", "gpt_oss", "--preset", "tiny"],
    "mxfp4_20b": ["--from-config", GPT_OSS_20B, "--layers", "2", "--experts", "8",
                  "--hidden", "64"],
}
MXFP4_LAYOUTS = {"mxfp4_tiny": [(1, 2, 1, 1), (2, 2, 1, 1), (1, 2, 2, 1), (1, 1, 1, 2)],
                 "mxfp4_20b": [(2, 1, 1, 1), (2, 2, 1, 1)]}


def run(args, timeout=120):
    return subprocess.run([BIN] + args, capture_output=True, text=True, timeout=timeout)


class ShardedGenerateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="sharded_generate_")
        cls.models = {}
        for arch in ARCHS:
            out = os.path.join(cls.tmp.name, arch)
            r = run(["make-model", "--arch", arch, "--preset", "tiny", "--dtype", "f32",
                     "--seed", "5", "--out", out])
            assert r.returncode == 0, r.stderr
            cls.models[arch] = out
        for name, args in MXFP4_MODELS.items():
            out = os.path.join(cls.tmp.name, name)
            r = run(["make-model"] + args + ["--dtype", "mxfp4", "--seed", "5", "--out", out])
            assert r.returncode == 0, r.stderr
            cls.models[name] = out

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def generate(self, arch, tp, ep, tag, dp=1, pp=1):
        logits = os.path.join(self.tmp.name, f"{arch}_{tag}.npy")
        r = run(["generate", "--model", self.models[arch], "--prompt-ids", PROMPT,
                 "--max-tokens", "6", "--temperature", "0", "--threads", "1",
                 "--tp", str(tp), "--ep", str(ep), "--dp", str(dp), "--pp", str(pp),
                 # Generous: up to 16 rank processes share 2 cores, and a loaded CI machine once
                 # stalled a healthy collective past 20 s. Dead ranks are tested separately.
                 "--comm-timeout", "90",
                 "--dump-logits", logits, "--max-batch-tokens", "4"], timeout=300)
        return r, logits

    def test_every_admitted_layout_matches_one_rank(self):
        for arch in ARCHS:
            ref, ref_logits = self.generate(arch, 1, 1, "ref")
            self.assertEqual(ref.returncode, 0, ref.stderr)
            want_ids = ref.stdout.split()
            want = np.load(ref_logits)
            for tp, ep, dp, pp in LAYOUTS:
                with self.subTest(arch=arch, tp=tp, ep=ep, dp=dp, pp=pp):
                    r, path = self.generate(arch, tp, ep, f"tp{tp}_ep{ep}_dp{dp}_pp{pp}", dp, pp)
                    if r.returncode != 0:
                        # Only a layout the model cannot take may fail, and it must say why.
                        self.assertRegex(r.stderr, r"not divisible", r.stderr)
                        continue
                    self.assertEqual(r.stdout.split(), want_ids)
                    got = np.load(path)
                    self.assertEqual(got.shape, want.shape)
                    err = np.linalg.norm(got - want) / np.linalg.norm(want)
                    self.assertLess(err, 1e-4)

    def test_mxfp4_layouts_match_one_rank(self):
        for name, layouts in MXFP4_LAYOUTS.items():
            ref, ref_logits = self.generate(name, 1, 1, "ref")
            self.assertEqual(ref.returncode, 0, ref.stderr)
            want = np.load(ref_logits)
            for tp, ep, dp, pp in layouts:
                with self.subTest(model=name, tp=tp, ep=ep, dp=dp, pp=pp):
                    r, path = self.generate(name, tp, ep, f"tp{tp}_ep{ep}_dp{dp}_pp{pp}", dp, pp)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertEqual(r.stdout.split(), ref.stdout.split())
                    got = np.load(path)
                    self.assertEqual(got.shape, want.shape)
                    self.assertLess(np.linalg.norm(got - want) / np.linalg.norm(want), 1e-4)

    def test_mxfp4_experts_split_into_partial_blocks_are_refused(self):
        # Expert width 32 over tp 2, and 64 over tp 4: 16 columns per rank, half an MX block.
        for name, tp, width in (("mxfp4_tiny", 2, 32), ("mxfp4_20b", 4, 64)):
            r, _ = self.generate(name, tp, 1, f"refused_tp{tp}")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(f"MXFP4 experts cannot be split over tp {tp}: moe_intermediate_size "
                          f"{width} / {tp} = 16 down_proj input columns per rank is not a whole "
                          "number of MX blocks of 32", r.stderr)
            self.assertIn("expert parallelism keeps experts whole: ep 2, 4, 8", r.stderr)

    def test_invalid_layouts_are_refused_with_the_reason(self):
        # The tiny qwen3_moe has 8 experts and 4 query heads: tp 3 divides neither.
        r, _ = self.generate("qwen3_moe", 3, 1, "tp3")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not divisible by tp 3", r.stderr)
        r, _ = self.generate("qwen3_moe", 2, 4, "tp2ep4")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("with tensor parallelism ep must be 1 or equal tp", r.stderr)
        r, _ = self.generate("qwen3_moe", 2, 2, "tp2dp2", dp=2)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("data-parallel attention needs ep = tp * dp = 4", r.stderr)
        r, _ = self.generate("qwen3_moe", 1, 1, "pp8", pp=8)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("num_hidden_layers (4) is smaller than pp 8", r.stderr)

    def test_a_killed_rank_fails_the_run_within_the_timeout(self):
        # A long generation; rank 1 is killed once it runs, and rank 0 must fail fast.
        proc = subprocess.Popen(
            [BIN, "generate", "--model", self.models["qwen3_moe"], "--prompt-ids", PROMPT,
             "--max-tokens", "20000", "--kv-cache-tokens", "20100", "--temperature", "0",
             "--threads", "1", "--tp", "2", "--comm-timeout", "10"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        child = None
        deadline = time.time() + 30
        while child is None and time.time() < deadline:
            out = subprocess.run(["pgrep", "-f", "--", f"--rank=1 .*tessera-generate-{proc.pid}"],
                                 capture_output=True, text=True).stdout.split()
            child = int(out[0]) if out else None
            time.sleep(0.1)
        self.assertIsNotNone(child, "rank 1 never started")
        time.sleep(1.0)  # let it get into the decode loop
        os.kill(child, signal.SIGKILL)
        killed = time.time()
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            self.fail("rank 0 did not notice its dead peer within 15 s")
        self.assertNotEqual(proc.returncode, 0)
        self.assertLess(time.time() - killed, 12)
        self.assertRegex(err, r"(?i)unavailable|deadline|closed|connection|peer", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
