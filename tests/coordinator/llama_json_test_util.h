// Test helper: a tiny Llama-style tokenizer.json (char-level BPE with byte_fallback), shared by
// the tokenizer and detokenizer tests. Not thread-safe (writes a temp file).
#pragma once

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "coordinator/text/tokenizer.h"
#include "kernels/base/logging.h"
#include "tests/test_util.h"

namespace tessera {

// A tiny Llama-style tokenizer.json (char-level BPE, byte_fallback, Prepend + Replace
// normalizer, Replace/ByteFallback/Fuse/Strip decoder) written to a temp dir: <unk> <s> </s>,
// <0x00>..<0xFF> (ids 3..258), "▁" 259, "H" 260, "i" 261, "▁H" 262, "▁Hi" 263, "è" 264.
// The expected values of the tests using it were checked against `tokenizers` 0.22.1 on the
// same file.
inline std::unique_ptr<Tokenizer> LlamaStyleTokenizer() {
  std::string vocab = R"("<unk>": 0, "<s>": 1, "</s>": 2)";
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    absl::StrAppend(&vocab, ", \"", name, "\": ", 3 + b);
  }
  absl::StrAppend(&vocab, R"(, "▁": 259, "H": 260, "i": 261, "▁H": 262, "▁Hi": 263, "è": 264)");
  const std::string path = testing::MakeTempDir("llama_json") + "/tokenizer.json";
  std::ofstream(path) << R"({"added_tokens": [)"
                      << R"({"id": 0, "content": "<unk>", "special": true, "normalized": false},)"
                      << R"({"id": 1, "content": "<s>", "special": true, "normalized": false},)"
                      << R"({"id": 2, "content": "</s>", "special": true, "normalized": false}],)"
                      << R"("normalizer": {"type": "Sequence", "normalizers": [)"
                      << R"({"type": "Prepend", "prepend": "▁"},)"
                      << R"({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},)"
                      << R"("pre_tokenizer": null,)"
                      << R"("decoder": {"type": "Sequence", "decoders": [)"
                      << R"({"type": "Replace", "pattern": {"String": "▁"}, "content": " "},)"
                      << R"({"type": "ByteFallback"}, {"type": "Fuse"},)"
                      << R"({"type": "Strip", "content": " ", "start": 1, "stop": 0}]},)"
                      << R"("model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",)"
                      << R"("fuse_unk": true, "byte_fallback": true, "vocab": {)" << vocab
                      << R"(}, "merges": [["▁", "H"], ["▁H", "i"]]}})";
  auto tok = Tokenizer::FromFile(path);
  CHECK(tok.ok()) << tok.status();
  return *std::move(tok);
}

}  // namespace tessera
