// `tessera chat-template`: renders a conversation with a model's chat template.
//
//   tessera chat-template (--model DIR | --template FILE.jinja [--bos-token S --eos-token S])
//       --messages FILE.json [--tools FILE.json] [--documents FILE.json] [--add-generation-prompt]
//       [--kwargs JSON]
//       [--template-name NAME] [--json] [--batch]
//
// Prints the rendered prompt verbatim (no newline added). With --json: one object
// {"prompt": "..."} plus "prompt_ids" when --model has a tokenizer.json (the prompt encoded
// with special tokens recognised and none added, like HF's apply_chat_template(tokenize=True)).
// --model DIR reads DIR/tokenizer_config.json / chat_template.jinja (and the special tokens);
// --bos-token / --eos-token override them. --batch (for tests and benchmarks): --messages holds
// a JSON list of cases {"messages", "tools"?, "documents"?, "add_generation_prompt"?, "kwargs"?};
// prints one JSON array with {"prompt"} or {"error", "raise_exception"?} per case.
//
// `tessera jinja-render` (hidden; conformance tests against Python jinja2): renders any template
// with any variables, in the same environment as chat templates.
//
//   tessera jinja-render --template FILE.jinja [--context JSON]
//   tessera jinja-render --batch FILE.json
//
// --context is a JSON object of template variables (default {}). Prints the output verbatim; a
// failure exits 1 with the error (and its kind) on stderr. --batch: FILE holds a JSON list of
// {"template": SOURCE, "context": {...}}; prints one JSON array with {"output"} or
// {"error", "kind"} per case (kind: syntax, undefined, type, value, security, raised, runtime,
// unsupported; "raised" cases also carry "raise_exception": the message).
#pragma once

namespace tessera {

int RunChatTemplate(int argc, char** argv);
int RunJinjaRender(int argc, char** argv);

}  // namespace tessera
