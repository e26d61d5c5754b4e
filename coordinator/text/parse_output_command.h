// `tessera parse-output`: runs the output parser (output_parser.h) over a text file, for scripts
// and the template round-trip test.
//
//   tessera parse-output (--format F | --model-type T --template-file J) --text-file X
//       [--no-reasoning] [--no-tools] [--starts-in-reasoning] [--tools-file TOOLS.json]
//       [--chunk N] [--seed S] [--json]
//
// --chunk N feeds the text in N-byte deltas (0: in one piece); the result is the merge of the
// deltas. Output (--json): one object {"format", "content", "reasoning_content", "tool_calls":
// [{"index", "id", "type": "function", "function": {"name", "arguments"}}]}; without --json the
// three parts as readable text.
#pragma once

namespace tessera {

int RunParseOutput(int argc, char** argv);

}  // namespace tessera
