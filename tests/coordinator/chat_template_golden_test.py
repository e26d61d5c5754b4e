"""Golden test: `tessera chat-template` renders every real chat template byte for byte like
Python jinja2 configured the way Hugging Face transformers configures it
(transformers.utils.chat_template_utils._compile_jinja_template / render_jinja_template).

Env: TESSERA_BIN, TESSERA_TESTDATA (see tests/CMakeLists.txt). One tessera process per template
renders the whole corpus (--batch), so the test takes a few seconds.
"""

import copy
import glob
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_jinja import RaisedByTemplate, hf_environment  # noqa: E402

BIN = os.environ["TESSERA_BIN"]
DATA = os.environ["TESSERA_TESTDATA"]
BOS, EOS = "<|bos|>", "<|eos|>"


# ---- the reference: jinja2 set up exactly like transformers --------------------------------

ENV = hf_environment()


def hf_render(template, case, special_tokens):
    """render_jinja_template: messages, tools (None when absent), documents=None,
    add_generation_prompt, then {**special_tokens_map, **kwargs}."""
    kwargs = dict(special_tokens)
    kwargs.update(case.get("kwargs", {}))
    return template.render(messages=copy.deepcopy(case["messages"]),
                           tools=copy.deepcopy(case.get("tools")), documents=None,
                           add_generation_prompt=case.get("add_generation_prompt", False),
                           **kwargs)


# ---- the corpus ---------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City and country, e.g. Paris, France"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius",
                         "description": "Temperature unit"},
                "days": {"type": "integer", "description": "Forecast days", "default": 1},
            },
            "required": ["location"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search_docs",
        "description": "Search the knowledge base — supports filters & paging <fast>",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "Free-text query (\"quoted\" phrases ok)"},
                "filters": {
                    "type": "object",
                    "description": "Restrict the search",
                    "properties": {
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "scores": {"type": "array", "items": {"type": "number"}},
                        "after": {"type": ["string", "null"], "description": "ISO date"},
                        "author": {"type": "object", "properties": {
                            "name": {"type": "string"}, "verified": {"type": "boolean"}}},
                    },
                },
                "limit": {"type": "integer", "default": 10},
                "mode": {"oneOf": [{"type": "string", "description": "named mode"},
                                   {"type": "number"}]},
                "items": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "integer"}}}},
                "ratio": {"type": "number", "nullable": True, "default": 0.5},
            },
            "required": ["query"],
        },
    },
}
NOARG_TOOL = {"type": "function", "function": {"name": "get_time", "description": "Current time",
                                               "parameters": {"type": "object", "properties": {}}}}
TOOLS = [WEATHER_TOOL, SEARCH_TOOL, NOARG_TOOL]


def call(name, args, cid, as_string=False):
    return {"id": cid, "type": "function",
            "function": {"name": name,
                         "arguments": json.dumps(args, ensure_ascii=False) if as_string else args}}


SYS = {"role": "system", "content": "You are a careful assistant. Answer briefly."}
U1 = {"role": "user", "content": "What's the weather in Paris?"}
A1 = {"role": "assistant", "content": "It is sunny and 22°C in Paris."}
U2 = {"role": "user", "content": "And tomorrow?"}
ARGS_NESTED = {"query": "moe \"routing\" ✓", "filters": {"tags": ["a", "b"], "scores": [1.5, 1e-07, 2.0],
                                                        "after": None, "author": {"name": "Zoë", "verified": True}},
               "limit": 3}


def corpus():
    cases = []

    def add(name, messages, tools=None, gen=True, **kwargs):
        c = {"name": name, "messages": messages, "add_generation_prompt": gen}
        if tools is not None:
            c["tools"] = tools
        if kwargs:
            c["kwargs"] = kwargs
        cases.append(c)

    add("single_user", [U1])
    add("single_user_no_gen", [U1], gen=False)
    add("system_user", [SYS, U1])
    add("multi_turn", [SYS, U1, A1, U2])
    add("multi_turn_no_system", [U1, A1, U2])
    add("ends_with_assistant", [SYS, U1, A1], gen=False)
    add("unicode", [{"role": "user", "content": "你好，世界 🌍! Ünïcödé — \"quotes\" 'single' \\ back\\slash\ttab\n"
                                                "new line <b>&amp;</b> {{ not jinja }} {% neither %}"},
                    {"role": "assistant", "content": "こんにちは 👋🏽 ✓ Ω≈ç√∫"},
                    {"role": "user", "content": "😀😀 emoji only"}])
    add("empty_contents", [{"role": "system", "content": ""}, {"role": "user", "content": ""},
                           {"role": "assistant", "content": ""}, {"role": "user", "content": "x"}])
    add("tools_first_turn", [SYS, U1], tools=TOOLS)
    add("tools_no_system", [U1], tools=[WEATHER_TOOL])
    add("tool_call_dict_args", [SYS, U1,
                                {"role": "assistant", "content": "",
                                 "tool_calls": [call("get_weather", {"location": "Paris", "unit": "celsius"},
                                                     "call00001")]},
                                {"role": "tool", "tool_call_id": "call00001", "name": "get_weather",
                                 "content": "{\"temp\": 22, \"sky\": \"sunny\"}"}], tools=TOOLS)
    add("tool_call_string_args", [U1,
                                  {"role": "assistant", "content": "",
                                   "tool_calls": [call("search_docs", ARGS_NESTED, "call00002", as_string=True)]},
                                  {"role": "tool", "tool_call_id": "call00002", "name": "search_docs",
                                   "content": "3 results"}], tools=TOOLS)
    add("tool_call_nested_dict_args", [U1,
                                       {"role": "assistant", "content": "Let me search.",
                                        "tool_calls": [call("search_docs", ARGS_NESTED, "call00003")]},
                                       {"role": "tool", "tool_call_id": "call00003", "name": "search_docs",
                                        "content": "nothing found"},
                                       {"role": "assistant", "content": "I found nothing."},
                                       U2], tools=TOOLS)
    add("parallel_tool_calls", [SYS, U1,
                                {"role": "assistant", "content": None,
                                 "tool_calls": [call("get_weather", {"location": "Paris"}, "call00004"),
                                                call("get_weather", {"location": "Tokyo", "days": 2}, "call00005")]},
                                {"role": "tool", "tool_call_id": "call00004", "name": "get_weather", "content": "22C"},
                                {"role": "tool", "tool_call_id": "call00005", "name": "get_weather", "content": "18C"}],
        tools=TOOLS)
    add("parallel_tool_calls_string_args", [U1,
                                            {"role": "assistant", "content": None,
                                             "tool_calls": [call("get_weather", {"location": "Paris"}, "call00006", True),
                                                            call("get_time", {}, "call00007", True)]},
                                            {"role": "tool", "tool_call_id": "call00006", "content": "22C"},
                                            {"role": "tool", "tool_call_id": "call00007", "content": "12:00"},
                                            {"role": "assistant", "content": "Done."}], tools=TOOLS, gen=False)
    add("reasoning_content", [SYS, U1,
                              {"role": "assistant", "content": "Sunny.", "reasoning_content": "User wants weather. Paris is sunny."},
                              U2])
    add("reasoning_content_last", [U1, {"role": "assistant", "content": "Sunny.",
                                        "reasoning_content": "\nthink about it\n"}], gen=False)
    add("think_tags_in_content", [U1, {"role": "assistant", "content": "<think>\nhmm, weather\n</think>\n\nSunny."}, U2])
    add("enable_thinking_false", [SYS, U1], enable_thinking=False)
    add("enable_thinking_true", [U1, A1, U2], enable_thinking=True)
    add("reasoning_effort_high", [SYS, U1], reasoning_effort="high")
    add("reasoning_effort_low_tools", [U1], tools=[WEATHER_TOOL], reasoning_effort="low")
    add("thinking_true", [SYS, U1, A1, U2], thinking=True)
    add("thinking_field", [U1, {"role": "assistant", "content": "Sunny.", "thinking": "Check weather."}], gen=False)
    add("builtin_tools", [U1], builtin_tools=["browser", "python"], model_identity="You are Tessera.")
    add("list_content", [{"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
                         {"role": "user", "content": [{"type": "text", "text": "Describe "},
                                                      {"type": "text", "text": "this."}]}])
    add("image_content", [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}])
    add("roles_not_alternating", [U1, U2])
    add("numbers_and_bools", [U1, {"role": "assistant", "content": None,
                                   "tool_calls": [call("search_docs", {"query": "x", "limit": 0, "ratio": 1.0,
                                                                       "big": 12345678901234, "neg": -3.25,
                                                                       "flags": [True, False, None]}, "call00008")]},
                              {"role": "tool", "tool_call_id": "call00008", "content": "ok"}], tools=TOOLS)
    add("reasoning_with_tool_calls", [SYS, U1,
                                      {"role": "assistant", "content": "",
                                       "reasoning_content": "Need the weather tool.",
                                       "tool_calls": [call("get_weather", {"location": "Paris"}, "call00009")]},
                                      {"role": "tool", "tool_call_id": "call00009", "name": "get_weather",
                                       "content": [{"type": "text", "text": "22C, sunny"}]},
                                      {"role": "assistant", "content": "Sunny, 22C.",
                                       "reasoning_content": "Tool says sunny."}, U2], tools=TOOLS)
    add("tool_result_list_content_no_gen", [U1,
                                            {"role": "assistant", "content": None,
                                             "tool_calls": [call("get_time", {}, "call00010")]},
                                            {"role": "tool", "tool_call_id": "call00010",
                                             "content": [{"type": "text", "text": "12:00"}]}],
        tools=[NOARG_TOOL], gen=False)
    add("two_system_messages", [SYS, {"role": "system", "content": "Second system."}, U1])
    add("developer_role", [{"role": "developer", "content": "Developer rules."}, U1])
    add("system_only", [SYS], gen=True)
    add("multi_part_assistant", [U1, {"role": "assistant", "content": [{"type": "text", "text": "Part A. "},
                                                                       {"type": "text", "text": "Part B."}]}, U2])
    # Real conversations from mistral-common's samples (tool calls with JSON-string arguments).
    for sample in sorted(glob.glob(os.path.join(DATA, "mistral_v1", "samples", "*", "sample.json"))):
        with open(sample, encoding="utf-8") as f:
            data = json.load(f)
        add("mistral_sample_" + os.path.basename(os.path.dirname(sample)), data["messages"],
            tools=data.get("tools") or None)
    return cases


def random_corpus(seed, count):
    """Seeded random conversations: role orders templates do not expect, content that is a
    string (with markup the templates split on), None, a list of parts, or missing; tool calls
    with random argument values; random kwargs."""
    import random
    rng = random.Random(seed)
    pieces = ["hi", "ça va?", "日本語", "🙂", "\n", "\t", "  ", "\"", "'", "\\", "<think>",
              "</think>", "<tool_response>", "</tool_response>", "{{ x }}", "%s", "[INST]",
              "<|im_end|>", "0", "None", "1.5", "a" * 30]

    def text():
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))

    def value(depth=0):
        kind = rng.randint(0, 7 if depth < 2 else 4)
        makers = [text, lambda: rng.randint(-5, 10**6),
                  lambda: rng.choice([0.5, 1e-9, 2.0, -3.25, 1e20]),
                  lambda: rng.choice([True, False]), lambda: None,
                  lambda: [value(depth + 1) for _ in range(rng.randint(0, 3))],
                  lambda: {text() or "k": value(depth + 1) for _ in range(rng.randint(0, 3))},
                  lambda: {"nested": {"deep": [value(depth + 2)]}}]
        return makers[kind]()

    def content():
        r = rng.random()
        if r < 0.6:
            return text()
        if r < 0.75:
            return None
        return [{"type": "text", "text": text()} for _ in range(rng.randint(1, 2))]

    cases = []
    for i in range(count):
        msgs = []
        if rng.random() < 0.5:
            msgs.append({"role": "system", "content": text() or "sys"})
        for _ in range(rng.randint(1, 6)):
            role = rng.choice(["user", "user", "assistant", "assistant", "tool", "system"])
            m = {"role": role}
            if rng.random() < 0.9:
                m["content"] = content()
            if role == "assistant" and rng.random() < 0.4:
                m["tool_calls"] = [call(rng.choice(["get_weather", "search_docs"]),
                                        {text() or "k": value() for _ in range(rng.randint(0, 3))},
                                        "c%08d" % rng.randint(0, 10**8), as_string=rng.random() < 0.3)
                                   for _ in range(rng.randint(1, 3))]
            if role == "assistant" and rng.random() < 0.3:
                m["reasoning_content"] = text()
            if role == "tool":
                m["tool_call_id"] = "c%08d" % rng.randint(0, 10**8)
            msgs.append(m)
        case = {"name": f"random_{seed}_{i}", "messages": msgs,
                "add_generation_prompt": rng.random() < 0.7}
        if rng.random() < 0.4:
            case["tools"] = rng.sample(TOOLS, rng.randint(1, 3))
        kwargs = {}
        if rng.random() < 0.3:
            kwargs["enable_thinking"] = rng.choice([True, False])
        if rng.random() < 0.2:
            kwargs["reasoning_effort"] = rng.choice(["low", "high"])
        if rng.random() < 0.2:
            kwargs["thinking"] = rng.choice([True, False])
        if kwargs:
            case["kwargs"] = kwargs
        cases.append(case)
    return cases


# ---- running both -------------------------------------------------------------------------

def run_tessera(args, cases):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cases.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(cases, f, ensure_ascii=False)
        proc = subprocess.run([BIN, "chat-template", *args, "--messages", path, "--batch"],
                              capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"tessera chat-template {args} failed: {proc.stderr.decode()}")
    return json.loads(proc.stdout.decode("utf-8"))


def python_result(template, case, special_tokens):
    try:
        return {"prompt": hf_render(template, case, special_tokens)}
    except RaisedByTemplate as e:
        return {"raised": str(e)}
    except Exception as e:  # noqa: BLE001 - every other jinja2/Python error must fail in C++ too
        return {"failed": f"{type(e).__name__}: {e}"}


def compare(label, template, args, cases, special_tokens, failures, stats):
    got = run_tessera(args, cases)
    assert len(got) == len(cases), label
    for case, g in zip(cases, got):
        want = python_result(template, case, special_tokens)
        where = f"{label} / {case['name']}"
        if "prompt" in want:
            stats["rendered"] += 1
            if g.get("prompt") != want["prompt"]:
                failures.append(f"{where}: output differs\n  python: {want['prompt']!r}\n"
                                f"  tessera: {g.get('prompt', g.get('error'))!r}")
        elif "raised" in want:
            stats["raised"] += 1
            if g.get("raise_exception") != want["raised"]:
                failures.append(f"{where}: python raise_exception({want['raised']!r}), tessera: {g!r}")
        else:
            stats["failed"] += 1
            if "error" not in g:
                failures.append(f"{where}: python failed ({want['failed']}), tessera rendered")
            else:
                # The Python message (UndefinedError / TypeError / SecurityError text) must appear.
                msg = want["failed"].split(": ", 1)[1]
                if msg not in g["error"]:
                    failures.append(f"{where}: error differs\n  python: {want['failed']}\n"
                                    f"  tessera: {g['error']}")


def template_files():
    return sorted(glob.glob(os.path.join(DATA, "chat_templates", "*.jinja")))


def model_dirs():
    out = []
    for cfg in sorted(glob.glob(os.path.join(DATA, "tokenizers", "*", "tokenizer_config.json"))):
        with open(cfg, encoding="utf-8") as f:
            if json.load(f).get("chat_template"):
                out.append(os.path.dirname(cfg))
    return out


def special_tokens_of(model_dir):
    with open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    out = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        v = cfg.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str):
            out[key] = v
    return out, cfg["chat_template"]


def test_all_templates_match_python_jinja2():
    cases = corpus() + random_corpus(seed=4, count=60)
    assert len(cases) >= 15
    failures, stats = [], {"rendered": 0, "raised": 0, "failed": 0}
    files = template_files()
    assert len(files) >= 11, files
    for path in files:
        with open(path, encoding="utf-8") as f:
            template = ENV.from_string(f.read())
        compare(os.path.basename(path), template,
                ["--template", path, "--bos-token", BOS, "--eos-token", EOS], cases,
                {"bos_token": BOS, "eos_token": EOS}, failures, stats)
    dirs = model_dirs()
    assert len(dirs) >= 2, dirs
    for d in dirs:
        tokens, source = special_tokens_of(d)
        compare("model " + os.path.basename(d), ENV.from_string(source), ["--model", d], cases,
                tokens, failures, stats)
    print(f"compared {stats}")
    assert not failures, "\n".join(failures[:20]) + f"\n({len(failures)} mismatches)"
    # The corpus must exercise all three outcomes.
    assert stats["rendered"] > 400 and stats["raised"] > 0 and stats["failed"] > 0, stats


def test_single_render_json_with_prompt_ids():
    from tokenizers import Tokenizer
    d = os.path.join(DATA, "tokenizers", "qwen3")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump([SYS, U1], f)
        proc = subprocess.run([BIN, "chat-template", "--model", d, "--messages", path,
                               "--add-generation-prompt", "--kwargs", '{"enable_thinking": false}',
                               "--json"], capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode()
        out = json.loads(proc.stdout)
        tokens, source = special_tokens_of(d)
        want = hf_render(ENV.from_string(source), {"messages": [SYS, U1], "add_generation_prompt": True,
                                                    "kwargs": {"enable_thinking": False}}, tokens)
        assert out["prompt"] == want
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        assert out["prompt_ids"] == tok.encode(want, add_special_tokens=False).ids
        # Without --json the prompt is printed verbatim.
        proc = subprocess.run([BIN, "chat-template", "--model", d, "--messages", path,
                               "--add-generation-prompt", "--kwargs", '{"enable_thinking": false}'],
                              capture_output=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.decode("utf-8") == want


def test_model_without_template_fails_clearly():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.json")
        with open(path, "w") as f:
            json.dump([U1], f)
        proc = subprocess.run([BIN, "chat-template", "--model", os.path.join(DATA, "tokenizers", "gpt_oss"),
                               "--messages", path], capture_output=True, timeout=60)
        assert proc.returncode != 0
        assert "no chat template" in proc.stderr.decode()


def test_documents_reach_the_template():
    source = ("{%- for d in documents %}[{{ loop.index }}] {{ d.title }}: {{ d.text }}\n{% endfor -%}"
              "{{ messages[-1].content }}")
    docs = [{"title": "Paris", "text": "Capital of France ✓"}, {"title": "Tokyo", "text": "東京"}]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, data in (("t.jinja", source), ("m.json", [U1]), ("d.json", docs)):
            paths[name] = os.path.join(tmp, name)
            with open(paths[name], "w", encoding="utf-8") as f:
                f.write(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False))
        proc = subprocess.run([BIN, "chat-template", "--template", paths["t.jinja"], "--messages",
                               paths["m.json"], "--documents", paths["d.json"]],
                              capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    want = ENV.from_string(source).render(messages=[U1], tools=None, documents=docs,
                                          add_generation_prompt=False)
    assert proc.stdout.decode("utf-8") == want


def _harmony_text(name):
    with open(os.path.join(DATA, "harmony", name), encoding="utf-8") as f:
        return f.read()


def test_gpt_oss_template_matches_harmony_renderings():
    """openai/harmony's canonical renderings vs the gpt-oss chat template (see
    docs/chat-templates.md for which files correspond). The template always writes
    "Current date: <today>" (strftime_now) while these harmony files have no date line, so that
    one line is removed before comparing."""
    path = os.path.join(DATA, "chat_templates", "openai-gpt-oss-120b.jinja")
    today = datetime.now().strftime("%Y-%m-%d")
    instr = {"role": "developer", "content": "Answer the user's questions like a robot."}
    capital = {"role": "user", "content": "What is the capital of the largest country in the world?"}
    cases = [
        ("test_simple_convo.txt", {"messages": [{"role": "user", "content": "What is 2 + 2?"}]}),
    ]
    for effort in ("low", "medium", "high"):
        cases.append((f"test_simple_convo_{effort}_effort.txt",
                      {"messages": [instr, capital], "kwargs": {"reasoning_effort": effort}}))
        cases.append((f"test_simple_convo_{effort}_effort_no_instruction.txt",
                      {"messages": [capital], "kwargs": {"reasoning_effort": effort}}))
    batch = []
    for _, c in cases:
        c = dict(c, name="h", add_generation_prompt=True)
        batch.append(c)
    got = run_tessera(["--template", path], batch)
    for (name, c), g in zip(cases, got):
        prompt = g["prompt"].replace(f"Current date: {today}\n", "", 1)
        if c["messages"][0] is instr:
            # The HF template ends the developer instructions with "\n\n"; harmony does not.
            assert "Answer the user's questions like a robot.\n\n<|end|>" in prompt, name
            prompt = prompt.replace("robot.\n\n<|end|>", "robot.<|end|>", 1)
        assert prompt == _harmony_text(name), name
    # Chain-of-thought dropping: compare the conversation part after the system message.
    convo = [{"role": "user", "content": "What is 2 + 2?"},
             {"role": "assistant", "content": "2 + 2 equals 4.",
              "thinking": "User asks a simple question: \"What is 2 + 2?\" The answer: 4."},
             {"role": "user", "content": "What about 9 / 2?"}]
    got = run_tessera(["--template", path], [{"name": "cot", "messages": convo,
                                              "add_generation_prompt": True}])
    prompt = got[0]["prompt"]
    suffix = prompt[prompt.index("<|start|>user"):]
    assert suffix == _harmony_text("test_dropping_cot_by_default.txt")


def main():
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_") and callable(v)]
    for t in tests:
        t()
        print(f"ok {t.__name__}")


if __name__ == "__main__":
    main()
