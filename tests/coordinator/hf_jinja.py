"""The Python reference for chat templates, shared by jinja_conformance_test.py and
chat_template_golden_test.py (not a test itself): jinja2 configured the way Hugging Face
transformers configures it in `_compile_jinja_template` (ImmutableSandboxedEnvironment with
trim_blocks, lstrip_blocks, the {% generation %} tag and loopcontrols; json.dumps as tojson;
raise_exception and strftime_now as globals)."""

import json
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


class RaisedByTemplate(jinja2.exceptions.TemplateError):
    """What raise_exception() raises (HF raises a plain TemplateError; a subclass lets the tests
    tell it from jinja2's own TemplateSyntaxError etc.)."""


def _raise_exception(message):
    raise RaisedByTemplate(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # HF overrides jinja's htmlsafe tojson with plain json.dumps.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


class AssistantTracker(jinja2.ext.Extension):
    """HF's {% generation %} ... {% endgeneration %} (renders its body)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def hf_environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env
