#!/usr/bin/env python3
"""Round trip of the output parsers through the real chat templates.

For each template in $TESSERA_TESTDATA/chat_templates, assistant turns with tool_calls, content
and reasoning are rendered with Python jinja2 set up as Hugging Face does (sandboxed environment,
trim_blocks, lstrip_blocks, tojson with ensure_ascii=False, raise_exception, strftime_now). The
text the model would have generated is the full rendering minus the rendering of the preceding
messages with add_generation_prompt=True (or, where the template's generation prompt differs
from its history rendering, the text after the assistant header), cut at the model's stop
token. `$TESSERA_BIN parse-output` (in one piece and in 1-byte deltas) must recover exactly the
tool calls (names, arguments as JSON values, ids where the text carries them), the reasoning and
the content that were rendered. Templates render assistant turns in the model's own format, so
this checks the parsers against the ground truth of each family.

Env: TESSERA_BIN (required), TESSERA_TESTDATA (default ../shared/testdata).
"""

import datetime
import json
import os
import subprocess
import sys
import tempfile
import unittest

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.environ.get("TESSERA_TESTDATA",
                          os.path.join(HERE, "..", "..", "..", "shared", "testdata"))
TEMPLATES = os.path.join(TESTDATA, "chat_templates")
BIN = os.environ.get("TESSERA_BIN")


def make_env(sandbox=ImmutableSandboxedEnvironment):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = sandbox(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env


ENV = make_env()
# Kimi-K2-Thinking appends to a list inside the template (tool_response_queue.ids.append), which
# the immutable sandbox rejects; Moonshot's own tooling renders it with a mutable sandbox.
MUTABLE_ENV = make_env(SandboxedEnvironment)

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "note": {"type": "string"}, "zip": {"type": "string"},
            "days": {"type": "integer"}, "opts": {"type": "object"}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Local time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
]

ARGS_A = {"city": "Zürich 東京", "note": "say \"hi\" 🌧 <b>", "zip": "01234", "days": 3,
          "opts": {"unit": "C", "list": [1, 2.5, None, True]}}
ARGS_B = {"tz": "Europe/Paris"}

# Per template: how the family renders an assistant turn.
#   fmt:        --format of parse-output
#   reasoning:  how reasoning is passed ("reasoning_content", "thinking", "in_content" (QwQ:
#               "<think>\nR\n</think>\n\nC" in content) or None: not rendered)
#   content_with_calls: the template renders content next to tool calls
#   max_calls:  calls rendered per turn
#   args:       "dict" or "string" (how the template wants arguments)
#   header:     fallback cut: the output starts after the last occurrence of this string
#   stops:      the model's stop tokens (excluded from the output, as detokenizers do)
#   no_content: what an absent content is passed as: "" (default), None or "omit" (no key)
#   reasoning_without_calls: the template renders reasoning of a turn without tool calls
#   ids:        "kimi" (functions.NAME:i), "given" (the rendered id is in the text) or None
SPECS = {
    "Qwen-Qwen3-0.6B.jinja": dict(fmt="qwen3", reasoning="reasoning_content",
                                  content_with_calls=True, max_calls=2, args="dict",
                                  header="<|im_start|>assistant\n", stops=["<|im_end|>"]),
    "Qwen-QwQ-32B.jinja": dict(fmt="qwen3", reasoning="in_content", content_with_calls=True,
                               max_calls=2, args="dict", header="<|im_start|>assistant",
                               stops=["<|im_end|>"]),
    "Qwen-Qwen2.5-7B-Instruct.jinja": dict(fmt="qwen3", reasoning=None, content_with_calls=True,
                                           max_calls=2, args="dict",
                                           header="<|im_start|>assistant",
                                           stops=["<|im_end|>"]),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": dict(
        fmt="deepseek_v3", reasoning=None, content_with_calls=False, max_calls=2, args="string",
        header="<｜Assistant｜>", stops=["<｜end▁of▁sentence｜>"], no_content=None),
    "deepseek-ai-DeepSeek-V3.1.jinja": dict(fmt="deepseek_v31", reasoning=None,
                                            content_with_calls=True, max_calls=2, args="string",
                                            header="<｜Assistant｜></think>",
                                            stops=["<｜end▁of▁sentence｜>"]),
    "moonshotai-Kimi-K2.jinja": dict(fmt="kimi_k2", reasoning=None, content_with_calls=True,
                                     max_calls=2, args="dict",
                                     header="<|im_assistant|>assistant<|im_middle|>",
                                     stops=["<|im_end|>"], ids="kimi"),
    "Kimi-K2-Thinking.jinja": dict(fmt="kimi_k2", reasoning="reasoning_content",
                                   content_with_calls=True, max_calls=2, args="dict",
                                   header="<|im_assistant|>assistant<|im_middle|>",
                                   stops=["<|im_end|>"], ids="kimi",
                                   reasoning_without_calls=False),
    "GLM-4.6.jinja": dict(fmt="glm45", reasoning="reasoning_content", content_with_calls=True,
                          max_calls=2, args="dict", header="<|assistant|>",
                          stops=["<|user|>", "<|observation|>"]),
    "glm_4_5.jinja": dict(fmt="glm45", reasoning="reasoning_content", content_with_calls=True,
                          max_calls=2, args="dict", header="<|assistant|>",
                          stops=["<|user|>", "<|observation|>"]),
    "openai-gpt-oss-120b.jinja": dict(fmt="gpt_oss", reasoning="thinking",
                                      content_with_calls=False, max_calls=1, args="dict",
                                      header="<|start|>assistant", stops=["<|return|>"],
                                      no_content="omit"),
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": dict(fmt="mistral", reasoning=None,
                                                      content_with_calls=False, max_calls=2,
                                                      args="dict", header="[/INST]",
                                                      stops=["</s>"], ids="given"),
}

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}


def render(template, messages, add_generation_prompt, **kwargs):
    env = MUTABLE_ENV if "tool_response_queue.ids.append" in template else ENV
    return env.from_string(template).render(messages=messages, tools=TOOLS,
                                            add_generation_prompt=add_generation_prompt,
                                            **SPECIAL, **kwargs)


def assistant_turn(spec, calls, content, reasoning):
    msg = {"role": "assistant"}
    tool_calls = []
    for i, (name, args) in enumerate(calls):
        tool_calls.append({"id": "abcDEF%03d" % i, "type": "function",
                           "function": {"name": name, "arguments":
                                        json.dumps(args, ensure_ascii=False)
                                        if spec["args"] == "string" else args}})
    if tool_calls:
        msg["tool_calls"] = tool_calls
    r = spec["reasoning"]
    if r == "in_content":
        msg["content"] = "<think>\n%s\n</think>\n\n%s" % (reasoning, content or "")
    else:
        no_content = spec.get("no_content", "")
        if content is not None:
            msg["content"] = content
        elif no_content != "omit":
            msg["content"] = no_content
        if r is not None and reasoning is not None:
            msg[r] = reasoning
    return msg


def model_output(spec, template, prefix, full):
    prompt = render(template, prefix, True)
    if full.startswith(prompt):
        out = full[len(prompt):]
    else:
        head = render(template, prefix, False)
        assert full.startswith(head), "history rendering is not a prefix of the full rendering"
        rest = full[len(head):]
        pos = rest.find(spec["header"])
        assert pos >= 0, "assistant header %r not found in %r" % (spec["header"], rest)
        out = rest[pos + len(spec["header"]):]
        prompt = head + rest[:pos + len(spec["header"])]
    for stop in spec["stops"]:
        if stop in out:
            out = out[:out.index(stop)]
    return prompt, out


def parse_output(fmt, text, starts_in_reasoning, chunk):
    with tempfile.TemporaryDirectory() as tmp:
        text_file = os.path.join(tmp, "out.txt")
        tools_file = os.path.join(tmp, "tools.json")
        with open(text_file, "w", encoding="utf-8") as f:
            f.write(text)
        with open(tools_file, "w", encoding="utf-8") as f:
            json.dump(TOOLS, f)
        cmd = [BIN, "parse-output", "--format", fmt, "--text-file", text_file, "--tools-file",
               tools_file, "--json", "--seed", "5", "--chunk", str(chunk)]
        if starts_in_reasoning:
            cmd.append("--starts-in-reasoning")
        res = subprocess.run(cmd, capture_output=True, timeout=60)
        if res.returncode != 0:
            raise AssertionError("%s failed: %s" % (cmd, res.stderr.decode()))
        return json.loads(res.stdout.decode("utf-8"))


class RoundTrip(unittest.TestCase):
    def check(self, name, calls, content, reasoning):
        spec = SPECS[name]
        with open(os.path.join(TEMPLATES, name), encoding="utf-8") as f:
            template = f.read()
        calls = calls[:spec["max_calls"]]
        if calls and not spec["content_with_calls"]:
            content = None
        if spec["reasoning"] is None or (not calls and
                                         not spec.get("reasoning_without_calls", True)):
            reasoning = None
        prefix = [{"role": "system", "content": "You are helpful."},
                  {"role": "user", "content": "Weather in Zürich and the time in Paris?"}]
        full = render(template, prefix + [assistant_turn(spec, calls, content, reasoning)], False)
        prompt, out = model_output(spec, template, prefix, full)
        starts_in_reasoning = prompt.rstrip("\n ").endswith("<think>")
        got = parse_output(spec["fmt"], out, starts_in_reasoning, 0)
        streamed = parse_output(spec["fmt"], out, starts_in_reasoning, 1)
        where = "%s: model output %r" % (name, out)
        self.assertEqual(streamed, got, where + " (1-byte deltas differ from one piece)")
        self.assertEqual(got["content"], content or "", where)
        self.assertEqual(got["reasoning_content"], reasoning or "", where)
        self.assertEqual(len(got["tool_calls"]), len(calls), where)
        for i, ((call_name, args), tc) in enumerate(zip(calls, got["tool_calls"])):
            self.assertEqual(tc["index"], i, where)
            self.assertEqual(tc["function"]["name"], call_name, where)
            self.assertEqual(json.loads(tc["function"]["arguments"]), args, where)
            if spec.get("ids") == "kimi":
                self.assertEqual(tc["id"], "functions.%s:%d" % (call_name, i), where)
            elif spec.get("ids") == "given":
                self.assertEqual(tc["id"], "abcDEF%03d" % i, where)
            else:
                self.assertRegex(tc["id"], r"^call_[A-Za-z0-9]{24}$", where)


def add_cases():
    cases = {
        "parallel_calls": ([("get_weather", ARGS_A), ("get_time", ARGS_B)], "Let me check both.",
                           "The user wants weather.\nAnd the time."),
        "one_call": ([("get_time", ARGS_B)], None, "Need the time."),
        "content_only": ([], "It is sunny — 20 °C.\n\nAnything else?", "Recall the forecast."),
    }
    for name in SPECS:
        for case, (calls, content, reasoning) in cases.items():
            test_name = "test_%s_%s" % (name.replace(".jinja", "").replace("-", "_")
                                        .replace(".", "_"), case)

            def test(self, name=name, calls=calls, content=content, reasoning=reasoning):
                self.check(name, calls, content, reasoning)
            setattr(RoundTrip, test_name, test)


add_cases()


class FormatDetection(unittest.TestCase):
    def test_cli_detects_format_from_each_template(self):
        for name, spec in SPECS.items():
            with tempfile.TemporaryDirectory() as tmp:
                text_file = os.path.join(tmp, "t.txt")
                with open(text_file, "w") as f:
                    f.write("hi")
                res = subprocess.run([BIN, "parse-output", "--template-file",
                                      os.path.join(TEMPLATES, name), "--text-file", text_file,
                                      "--json"], capture_output=True, timeout=60)
                self.assertEqual(res.returncode, 0, res.stderr)
                self.assertEqual(json.loads(res.stdout)["format"], spec["fmt"], name)

    def test_cli_unknown_format_is_an_error_naming_it(self):
        with tempfile.TemporaryDirectory() as tmp:
            text_file = os.path.join(tmp, "t.txt")
            with open(text_file, "w") as f:
                f.write("hi")
            res = subprocess.run([BIN, "parse-output", "--format", "llama3_json", "--text-file",
                                  text_file], capture_output=True, timeout=60)
            self.assertNotEqual(res.returncode, 0)
            self.assertIn("llama3_json", res.stderr.decode())


if __name__ == "__main__":
    if not BIN:
        print("TESSERA_BIN is not set", file=sys.stderr)
        sys.exit(1)
    unittest.main(verbosity=1)
