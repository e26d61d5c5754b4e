// `tessera tokenize`: the tokenizer on its own, for scripts, debugging and the reference test.
//
//   tessera tokenize --model DIR_OR_FILE (--text T | --file F | --batch F.json | --decode IDS)
//       [--json] [--no-special] [--skip-special]
//
// --model is a model directory (LoadTokenizer picks tokenizer.json, tiktoken.model or
// tokenizer.model) or one of those files. --text / --file (raw bytes, not stripped): encodes;
// --no-special tokenizes special-token text as ordinary text. Output: the ids on one line,
// then one "ID<TAB>TOKEN" line per token; with --json one object {"ids": [...], "tokens":
// [...], "text": Decode(ids)} (TOKEN: the vocabulary spelling, e.g. "Ġthe", "▁the").
// --batch F.json: F holds a JSON array of strings; prints a JSON array of such objects (one
// tokenizer load for many texts). --decode 1,2,3: prints the decoded text (--json: {"text"}),
// --skip-special drops special tokens. Decoded text that is not valid UTF-8 cannot occur
// (Decode replaces it); tokens that are not valid UTF-8 are written with U+FFFD in JSON.
#pragma once

namespace tessera {

int RunTokenize(int argc, char** argv);

}  // namespace tessera
