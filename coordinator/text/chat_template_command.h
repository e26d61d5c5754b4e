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
#pragma once

namespace tessera {

int RunChatTemplate(int argc, char** argv);

}  // namespace tessera
