"""Each rank's resident weight bytes equal the sharding planner's per-rank weight bytes.

`tessera generate --json` reports, per world rank, the checkpoint bytes that rank's loader asked
for (Checkpoint::bytes_loaded: zero-copy views plus pread slices; the loader asks only for what
it keeps, so experts it does not own and other ranks' slices are never read). `tessera plan
--json` predicts each rank's weight bytes from config.json alone
(worker/checkpoint/tensor_layout.h). For every MoE family's tiny preset and the layouts tp 2,
ep 2, pp 2, dp 2 / ep 2 and the combined tp 2 x pp 2, tp 2 x dp 2 / ep 4, both must agree to the
byte on every rank. The worker's `--ep N` alone (attention replicated) holds the planner's
tp 1 / dp N / ep N weights. Dense families are checked on the layouts they admit (tp, pp).
gpt-oss in the MXFP4 release format too: the tiny preset (one MX block per expert row: ep, pp,
dp / ep) and gpt-oss-20b scaled to hidden 64 (two blocks: experts split over tp 2).
"""
import json
import os
import subprocess
import tempfile
import unittest

BIN = os.environ["TESSERA_BIN"]
MOE = ["qwen3_moe", "qwen2_moe", "mixtral", "deepseek_v3", "glm4_moe", "minimax_m2", "gpt_oss"]
DENSE = ["llama", "qwen3"]
# (tp, ep, dp, pp) as `tessera generate` takes them.
MOE_LAYOUTS = [(2, 1, 1, 1), (1, 2, 1, 1), (1, 1, 1, 2), (1, 2, 2, 1), (2, 1, 1, 2),
               (2, 4, 2, 1)]
DENSE_LAYOUTS = [(2, 1, 1, 1), (1, 1, 1, 2), (2, 1, 1, 2)]
GPT_OSS_20B = os.path.join(os.environ.get("TESSERA_TESTDATA", ""), "configs",
                           "openai__gpt-oss-20b", "config.json")
MXFP4 = {  # name -> (make-model arguments, layouts)
    "mxfp4_tiny": (["--arch", "gpt_oss", "--preset", "tiny"],
                   [(1, 2, 1, 1), (1, 1, 1, 2), (1, 2, 2, 1), (2, 2, 1, 1)]),
    "mxfp4_20b": (["--from-config", GPT_OSS_20B, "--layers", "2", "--experts", "8", "--hidden",
                   "64"], [(2, 1, 1, 1), (2, 1, 1, 2), (2, 4, 2, 1)]),
}


def run(args, timeout=120):
    return subprocess.run([BIN] + args, capture_output=True, text=True, timeout=timeout)


class RankWeightBytesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="rank_weight_bytes_")
        cls.models = {}
        for arch in MOE + DENSE:
            out = os.path.join(cls.tmp.name, arch)
            r = run(["make-model", "--arch", arch, "--preset", "tiny", "--dtype", "f32",
                     "--seed", "5", "--out", out])
            assert r.returncode == 0, r.stderr
            cls.models[arch] = out
        for name, (args, _) in MXFP4.items():
            out = os.path.join(cls.tmp.name, name)
            r = run(["make-model"] + args + ["--dtype", "mxfp4", "--seed", "5", "--out", out])
            assert r.returncode == 0, r.stderr
            cls.models[name] = out

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def loaded_bytes(self, arch, tp, ep, dp, pp):
        r = run(["generate", "--model", self.models[arch], "--prompt-ids", "3,1,4,1,5",
                 "--max-tokens", "1", "--temperature", "0", "--threads", "1", "--json",
                 "--tp", str(tp), "--ep", str(ep), "--dp", str(dp), "--pp", str(pp),
                 "--comm-timeout", "20"])
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)["rank_weight_bytes"]

    def planned_bytes(self, arch, tp, ep, dp, pp, world):
        if tp == 1 and dp == 1 and ep > 1:
            dp = ep  # replicated attention: the planner's data-parallel layout, same weights
        r = run(["plan", "--model", self.models[arch], "--devices", str(world),
                 "--device-memory", "1GiB", "--tp", str(tp), "--ep", str(ep), "--dp", str(dp),
                 "--pp", str(pp), "--json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        return [rank["weight_bytes"] for rank in json.loads(r.stdout)["ranks"]]

    def check(self, archs, layouts):
        for arch in archs:
            for tp, ep, dp, pp in layouts:
                with self.subTest(arch=arch, tp=tp, ep=ep, dp=dp, pp=pp):
                    got = self.loaded_bytes(arch, tp, ep, dp, pp)
                    self.assertEqual(len(got), pp * max(tp * dp, ep))
                    self.assertEqual(got, self.planned_bytes(arch, tp, ep, dp, pp, len(got)))

    def test_moe_ranks_load_exactly_the_planned_bytes(self):
        self.check(MOE, MOE_LAYOUTS)

    def test_dense_ranks_load_exactly_the_planned_bytes(self):
        self.check(DENSE, DENSE_LAYOUTS)

    def test_mxfp4_ranks_load_exactly_the_planned_bytes(self):
        for name, (_, layouts) in MXFP4.items():
            self.check([name], layouts)

    def test_expert_parallel_ranks_read_a_fraction_of_the_experts(self):
        # One rank reads everything; with ep 2 each rank reads less than the whole checkpoint,
        # and the two together read the replicated part twice but every expert once.
        whole = self.loaded_bytes("qwen3_moe", 1, 1, 1, 1)[0]
        split = self.loaded_bytes("qwen3_moe", 1, 2, 1, 1)
        self.assertTrue(all(b < whole for b in split), (split, whole))
        self.assertGreater(sum(split), whole)


if __name__ == "__main__":
    unittest.main(verbosity=2)
