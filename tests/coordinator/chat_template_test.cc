// Unit tests of the Jinja2 interpreter behind ChatTemplate (coordinator/text/jinja/): one
// construct per test. Expected outputs were produced by Python jinja2 3.1 configured as Hugging
// Face does (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, HF's
// tojson); errors check the message and the template line/column reported.
#include "coordinator/text/chat_template.h"

#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/text/jinja/errors.h"
#include "coordinator/text/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using Json = nlohmann::ordered_json;
using ::testing::HasSubstr;

void ExpectRender(const std::string& source, const std::string& context,
                  const std::string& expected) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source);
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> out = t->Render(Json::parse(context));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, expected);
}

void ExpectError(const std::string& source, const std::string& context,
                 const std::string& message, int line, int column) {
  absl::Status status;
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source);
  if (!t.ok()) {
    status = t.status();
  } else {
    status = t->Render(Json::parse(context)).status();
  }
  ASSERT_FALSE(status.ok()) << "rendered without error";
  EXPECT_THAT(std::string(status.message()), HasSubstr(message));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr(absl::StrCat("template line ", line, ", column ", column, ":")));
}

TEST(ChatTemplateJinjaTest, TextPassesThrough) {
  ExpectRender(R"__(hello world)__",
               R"__({})__",
               R"__(hello world)__");
}

TEST(ChatTemplateJinjaTest, TrailingNewlineDropped) {
  ExpectRender(R"__(a
)__",
               R"__({})__",
               R"__(a)__");
}

TEST(ChatTemplateJinjaTest, OnlyOneTrailingNewlineDropped) {
  ExpectRender(R"__(a

)__",
               R"__({})__",
               R"__(a
)__");
}

TEST(ChatTemplateJinjaTest, CrLfNormalised) {
  ExpectRender(R"__(a
b
c)__",
               R"__({})__",
               R"__(a
b
c)__");
}

TEST(ChatTemplateJinjaTest, VariableOutput) {
  ExpectRender(R"__({{ name }}!)__",
               R"__({"name": "Ada"})__",
               R"__(Ada!)__");
}

TEST(ChatTemplateJinjaTest, UndefinedPrintsEmpty) {
  ExpectRender(R"__([{{ missing }}])__",
               R"__({})__",
               R"__([])__");
}

TEST(ChatTemplateJinjaTest, NonePrintsNone) {
  ExpectRender(R"__({{ x }})__",
               R"__({"x": null})__",
               R"__(None)__");
}

TEST(ChatTemplateJinjaTest, BoolsPrintPythonStyle) {
  ExpectRender(R"__({{ t }} {{ f }} {{ true }})__",
               R"__({"t": true, "f": false})__",
               R"__(True False True)__");
}

TEST(ChatTemplateJinjaTest, ListReprPython) {
  ExpectRender(R"__({{ x }})__",
               R"__({"x": ["a", 1, null, true, 1.5, {"k": "v'"}]})__",
               R"__(['a', 1, None, True, 1.5, {'k': "v'"}])__");
}

TEST(ChatTemplateJinjaTest, TupleRepr) {
  ExpectRender(R"__({{ (1,) }} {{ (1, 'a') }})__",
               R"__({})__",
               R"__((1,) (1, 'a'))__");
}

TEST(ChatTemplateJinjaTest, StringReprQuotes) {
  ExpectRender(R"__({{ ["it's", 'say "hi"', "both ' \"", 'tab\tnl\n'] }})__",
               R"__({})__",
               R"__(["it's", 'say "hi"', 'both \' "', 'tab\tnl\n'])__");
}

TEST(ChatTemplateJinjaTest, FloatFormatting) {
  ExpectRender(R"__({{ 1.0 }} {{ x }} {{ y }} {{ z }} {{ 0.1 + 0.2 }} {{ 1e22 }} {{ 2.5e-3 }})__",
               R"__({"x": 1e-05, "y": 1.2345678901234568e+17, "z": 3.0})__",
               R"__(1.0 1e-05 1.2345678901234568e+17 3.0 0.30000000000000004 1e+22 0.0025)__");
}

TEST(ChatTemplateJinjaTest, IntegerArithmetic) {
  ExpectRender(R"__({{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} {{ 4 / 2 }} {{ 2 ** -1 }})__",
               R"__({})__",
               R"__(3 -4 1 2 1024 3.5 2.0 0.5)__");
}

TEST(ChatTemplateJinjaTest, MixedArithmetic) {
  ExpectRender(R"__({{ 1 + 2.5 }} {{ 3 * 1.5 }} {{ 10 - 0.5 }} {{ true + 1 }})__",
               R"__({})__",
               R"__(3.5 4.5 9.5 2)__");
}

TEST(ChatTemplateJinjaTest, StringConcatAndRepeat) {
  ExpectRender(R"__({{ 'ab' + 'cd' }} {{ 'ab' * 3 }} {{ 1 ~ 'x' ~ none ~ missing }})__",
               R"__({})__",
               R"__(abcd ababab 1xNone)__");
}

TEST(ChatTemplateJinjaTest, ListConcat) {
  ExpectRender(R"__({{ [1] + [2, 3] }})__",
               R"__({})__",
               R"__([1, 2, 3])__");
}

TEST(ChatTemplateJinjaTest, Comparisons) {
  ExpectRender(R"__({{ 1 < 2 }} {{ 'b' > 'a' }} {{ 2 >= 2.0 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ [1, 2] < [1, 3] }})__",
               R"__({})__",
               R"__(True True True True True True)__");
}

TEST(ChatTemplateJinjaTest, DictEqualityIgnoresOrder) {
  ExpectRender(R"__({{ a == b }} {{ a == c }})__",
               R"__({"a": {"x": 1, "y": 2}, "b": {"y": 2, "x": 1}, "c": {"x": 1}})__",
               R"__(True False)__");
}

TEST(ChatTemplateJinjaTest, InOperator) {
  ExpectRender(R"__({{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in d }} {{ 'z' not in d }} {{ 'x' in missing }})__",
               R"__({"d": {"k": 1}})__",
               R"__(True True True True False)__");
}

TEST(ChatTemplateJinjaTest, AndOrReturnOperands) {
  ExpectRender(R"__({{ 0 or 'x' }} {{ 'a' and 'b' }} {{ '' and 'b' }}|{{ none or [] }})__",
               R"__({})__",
               R"__(x b |[])__");
}

TEST(ChatTemplateJinjaTest, NotOperator) {
  ExpectRender(R"__({{ not 0 }} {{ not 'a' }} {{ not missing }})__",
               R"__({})__",
               R"__(True False True)__");
}

TEST(ChatTemplateJinjaTest, InlineIf) {
  ExpectRender(R"__({{ 'yes' if x else 'no' }} [{{ 'only' if not x }}])__",
               R"__({"x": true})__",
               R"__(yes [])__");
}

TEST(ChatTemplateJinjaTest, Precedence) {
  ExpectRender(R"__({{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }} {{ 2 * 3 ~ 4 }} {{ not 1 == 2 }})__",
               R"__({})__",
               R"__(7 9 4 64 True)__");
}

TEST(ChatTemplateJinjaTest, StringEscapes) {
  ExpectRender(R"__({{ 'a\nb\t\u00e9\x41\\' }})__",
               R"__({})__",
               R"__(a
b	éA\)__");
}

TEST(ChatTemplateJinjaTest, AdjacentStringLiterals) {
  ExpectRender(R"__({{ 'a' "b" 'c' }})__",
               R"__({})__",
               R"__(abc)__");
}

TEST(ChatTemplateJinjaTest, AttributeFallsBackToItem) {
  ExpectRender(R"__({{ m.role }} {{ m['role'] }})__",
               R"__({"m": {"role": "user"}})__",
               R"__(user user)__");
}

TEST(ChatTemplateJinjaTest, DictMethodShadowsKey) {
  ExpectRender(R"__({{ d['items'] }} {{ d.items() | list }})__",
               R"__({"d": {"items": [1]}})__",
               R"__([1] [('items', [1])])__");
}

TEST(ChatTemplateJinjaTest, ListIndexing) {
  ExpectRender(R"__({{ x[0] }} {{ x[-1] }} [{{ x[5] }}])__",
               R"__({"x": ["a", "b", "c"]})__",
               R"__(a c [])__");
}

TEST(ChatTemplateJinjaTest, Slicing) {
  ExpectRender(R"__({{ x[1:] }} {{ x[:-1] }} {{ x[::-1] }} {{ x[::2] }} {{ s[1:3] }} {{ s[::-1] }})__",
               R"__({"x": [1, 2, 3, 4], "s": "héllo"})__",
               R"__([2, 3, 4] [1, 2, 3] [4, 3, 2, 1] [1, 3] él olléh)__");
}

TEST(ChatTemplateJinjaTest, StringIndexByCodePoint) {
  ExpectRender(R"__({{ s[1] }} {{ s|length }})__",
               R"__({"s": "日本語"})__",
               R"__(本 3)__");
}

TEST(ChatTemplateJinjaTest, ListLiteralAndDictLiteral) {
  ExpectRender(R"__({{ [1, 'a'] }} {{ {'a': 1, 'b': [2]} }})__",
               R"__({})__",
               R"__([1, 'a'] {'a': 1, 'b': [2]})__");
}

TEST(ChatTemplateJinjaTest, IfElifElse) {
  ExpectRender(R"__({% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %} {% endfor %})__",
               R"__({})__",
               R"__(one two many )__");
}

TEST(ChatTemplateJinjaTest, ForLoopVariables) {
  ExpectRender(R"__({% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %})__",
               R"__({})__",
               R"__(1032TrueFalse3;2121FalseFalse3;3210FalseTrue3;)__");
}

TEST(ChatTemplateJinjaTest, ForLoopPrevNextItem) {
  ExpectRender(R"__({% for x in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }},{% endfor %})__",
               R"__({})__",
               R"__(-2,1-3,2-,)__");
}

TEST(ChatTemplateJinjaTest, ForLoopCycle) {
  ExpectRender(R"__({% for x in range(4) %}{{ loop.cycle('odd', 'even') }} {% endfor %})__",
               R"__({})__",
               R"__(odd even odd even )__");
}

TEST(ChatTemplateJinjaTest, ForElse) {
  ExpectRender(R"__({% for x in [] %}x{% else %}empty{% endfor %})__",
               R"__({})__",
               R"__(empty)__");
}

TEST(ChatTemplateJinjaTest, ForOverDictYieldsKeys) {
  ExpectRender(R"__({% for k in d %}{{ k }}{% endfor %})__",
               R"__({"d": {"b": 1, "a": 2}})__",
               R"__(ba)__");
}

TEST(ChatTemplateJinjaTest, ForTupleUnpacking) {
  ExpectRender(R"__({% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %})__",
               R"__({"d": {"b": 1, "a": 2}})__",
               R"__(b=1;a=2;)__");
}

TEST(ChatTemplateJinjaTest, ForWithFilter) {
  ExpectRender(R"__({% for x in range(10) if x is odd %}{{ x }}{{ loop.length }} {% endfor %})__",
               R"__({})__",
               R"__(15 35 55 75 95 )__");
}

TEST(ChatTemplateJinjaTest, ForOverUndefinedIsEmpty) {
  ExpectRender(R"__([{% for x in missing %}x{% endfor %}])__",
               R"__({})__",
               R"__([])__");
}

TEST(ChatTemplateJinjaTest, BreakAndContinue) {
  ExpectRender(R"__({% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %})__",
               R"__({})__",
               R"__(0134)__");
}

TEST(ChatTemplateJinjaTest, RecursiveLoop) {
  ExpectRender(R"__({% for n in tree recursive %}{{ n.name }}{% if n.children %}({{ loop(n.children) }}){% endif %}{% endfor %})__",
               R"__({"tree": [{"name": "a", "children": [{"name": "b"}, {"name": "c", "children": [{"name": "d"}]}]}, {"name": "e"}]})__",
               R"__(a(bc(d))e)__");
}

TEST(ChatTemplateJinjaTest, RecursiveLoopDepth) {
  ExpectRender(R"__({% for n in tree recursive %}{{ loop.depth }}{% if n.c %}{{ loop(n.c) }}{% endif %}{% endfor %})__",
               R"__({"tree": [{"c": [{"c": [{}]}]}]})__",
               R"__(123)__");
}

TEST(ChatTemplateJinjaTest, SetInsideLoopDoesNotLeak) {
  ExpectRender(R"__({% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = x + 10 %}{{ x }} {% endfor %}{{ x }})__",
               R"__({})__",
               R"__(111 111 1)__");
}

TEST(ChatTemplateJinjaTest, NamespaceCarriesAcrossLoop) {
  ExpectRender(R"__({% set ns = namespace(n=0, seen=[]) %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }} {{ ns.seen }})__",
               R"__({})__",
               R"__(6 [])__");
}

TEST(ChatTemplateJinjaTest, SetTupleUnpacking) {
  ExpectRender(R"__({% set a, b = [1, 2] %}{{ b }}{{ a }})__",
               R"__({})__",
               R"__(21)__");
}

TEST(ChatTemplateJinjaTest, BlockSet) {
  ExpectRender(R"__({% set x %}hello {{ name }}{% endset %}[{{ x }}])__",
               R"__({"name": "you"})__",
               R"__([hello you])__");
}

TEST(ChatTemplateJinjaTest, BlockSetWithFilter) {
  ExpectRender(R"__({% set x | upper %}hello{% endset %}{{ x }})__",
               R"__({})__",
               R"__(HELLO)__");
}

TEST(ChatTemplateJinjaTest, MacroWithDefaults) {
  ExpectRender(R"__({% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Ada') }} {{ greet('Bob', greeting='Hi') }} {{ greet(greeting='Yo', name='Cy') }})__",
               R"__({})__",
               R"__(Hello, Ada! Hi, Bob! Yo, Cy!)__");
}

TEST(ChatTemplateJinjaTest, MacroSeesCallTimeGlobals) {
  ExpectRender(R"__({% macro m() %}{{ b }}{% endmacro %}{% set b = 1 %}{{ m() }}{% set b = 2 %}{{ m() }})__",
               R"__({})__",
               R"__(12)__");
}

TEST(ChatTemplateJinjaTest, MacroLocalSet) {
  ExpectRender(R"__({% macro m() %}{% if v is not defined %}{% set v = 'default' %}{% endif %}{{ v }}{% endmacro %}{{ m() }})__",
               R"__({})__",
               R"__(default)__");
}

TEST(ChatTemplateJinjaTest, MacroVarargsKwargs) {
  ExpectRender(R"__({% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, x=4) }})__",
               R"__({})__",
               R"__(1(2, 3){'x': 4})__");
}

TEST(ChatTemplateJinjaTest, MacroRecursion) {
  ExpectRender(R"__({% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }})__",
               R"__({})__",
               R"__(321)__");
}

TEST(ChatTemplateJinjaTest, CallBlock) {
  ExpectRender(R"__({% macro box(t) %}[{{ t }}:{{ caller() }}]{% endmacro %}{% call box('x') %}inner{% endcall %})__",
               R"__({})__",
               R"__([x:inner])__");
}

TEST(ChatTemplateJinjaTest, CallBlockWithArgs) {
  ExpectRender(R"__({% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% endmacro %}{% call(v) each([1, 2]) %}<{{ v }}>{% endcall %})__",
               R"__({})__",
               R"__(<1><2>)__");
}

TEST(ChatTemplateJinjaTest, FilterBlock) {
  ExpectRender(R"__({% filter upper %}abc {{ x }}{% endfilter %})__",
               R"__({"x": "def"})__",
               R"__(ABC DEF)__");
}

TEST(ChatTemplateJinjaTest, WithBlock) {
  ExpectRender(R"__({% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}])__",
               R"__({})__",
               R"__(3[])__");
}

TEST(ChatTemplateJinjaTest, Comments) {
  ExpectRender(R"__(a{# comment #}b{#- trimmed -#}  c)__",
               R"__({})__",
               R"__(abc)__");
}

TEST(ChatTemplateJinjaTest, Raw) {
  ExpectRender(R"__({% raw %}{{ not rendered }}{% endraw %})__",
               R"__({})__",
               R"__({{ not rendered }})__");
}

TEST(ChatTemplateJinjaTest, WhitespaceControlMinus) {
  ExpectRender(R"__(a  {{- 'b' -}}  c {%- if true -%}  d  {%- endif -%} e)__",
               R"__({})__",
               R"__(abcde)__");
}

TEST(ChatTemplateJinjaTest, TrimBlocks) {
  ExpectRender(R"__({% if true %}
x
{% endif %}
y)__",
               R"__({})__",
               R"__(x
y)__");
}

TEST(ChatTemplateJinjaTest, LstripBlocks) {
  ExpectRender(R"__(  {% if true %}
    x
  {% endif %}
z)__",
               R"__({})__",
               R"__(    x
z)__");
}

TEST(ChatTemplateJinjaTest, LstripNotForVariables) {
  ExpectRender(R"__(  {{ 'v' }}
)__",
               R"__({})__",
               R"__(  v)__");
}

TEST(ChatTemplateJinjaTest, PlusDisablesLstrip) {
  ExpectRender(R"__(  {%+ if true %}x{% endif %})__",
               R"__({})__",
               R"__(  x)__");
}

TEST(ChatTemplateJinjaTest, CommentTrimAndLstrip) {
  ExpectRender(R"__(a
  {# c #}
b)__",
               R"__({})__",
               R"__(a
b)__");
}

TEST(ChatTemplateJinjaTest, TestsTypes) {
  ExpectRender(R"__({{ 's' is string }} {{ 1 is number }} {{ 1 is integer }} {{ 1.0 is float }} {{ true is boolean }} {{ none is none }} {{ d is mapping }} {{ l is sequence }} {{ l is iterable }} {{ 's' is iterable }} {{ missing is iterable }} {{ true is number }} {{ true is integer }})__",
               R"__({"d": {}, "l": []})__",
               R"__(True True True True True True True True True True True True False)__");
}

TEST(ChatTemplateJinjaTest, TestsDefined) {
  ExpectRender(R"__({{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ x is not none }})__",
               R"__({"x": 1})__",
               R"__(True False True True)__");
}

TEST(ChatTemplateJinjaTest, TestsValues) {
  ExpectRender(R"__({{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ false is false }} {{ 0 is false }} {{ true is true }} {{ 2 is eq 2 }} {{ 2 is equalto 3 }} {{ 3 is gt 2 }} {{ 2 is le 2 }} {{ 'a' is in 'abc' }} {{ 'abc' is lower }} {{ 'ABC' is upper }})__",
               R"__({})__",
               R"__(True True True False True False True True False True True True True True)__");
}

TEST(ChatTemplateJinjaTest, TestSameAs) {
  ExpectRender(R"__({{ x is sameas false }} {{ none is sameas none }})__",
               R"__({"x": false})__",
               R"__(True True)__");
}

TEST(ChatTemplateJinjaTest, FilterTojson) {
  ExpectRender(R"__({{ d | tojson }})__",
               R"__({"d": {"b": [1, 2.5, null, true], "a": "é<>&'\"\\\n"}})__",
               R"__({"b": [1, 2.5, null, true], "a": "é<>&'\"\\\n"})__");
}

TEST(ChatTemplateJinjaTest, FilterTojsonIndent) {
  ExpectRender(R"__({{ d | tojson(indent=2) }})__",
               R"__({"d": {"b": [1, {}], "a": []}})__",
               R"__({
  "b": [
    1,
    {}
  ],
  "a": []
})__");
}

TEST(ChatTemplateJinjaTest, FilterTojsonPositionalIsEnsureAscii) {
  ExpectRender(R"__({{ d | tojson(2) }})__",
               R"__({"d": {"a": "é😀"}})__",
               R"__({"a": "\u00e9\ud83d\ude00"})__");
}

TEST(ChatTemplateJinjaTest, FilterTojsonSeparatorsSortKeys) {
  ExpectRender(R"__({{ d | tojson(separators=(',', ':'), sort_keys=true) }})__",
               R"__({"d": {"b": 1, "a": [1, 2]}})__",
               R"__({"a":[1,2],"b":1})__");
}

TEST(ChatTemplateJinjaTest, FilterStringLengthCount) {
  ExpectRender(R"__({{ 12 | string }} {{ [1] | string }} {{ 'héllo' | length }} {{ d | count }})__",
               R"__({"d": {"a": 1}})__",
               R"__(12 [1] 5 1)__");
}

TEST(ChatTemplateJinjaTest, FilterFirstLast) {
  ExpectRender(R"__({{ [1, 2, 3] | first }} {{ [1, 2, 3] | last }} {{ 'abc' | first }} [{{ [] | first }}])__",
               R"__({})__",
               R"__(1 3 a [])__");
}

TEST(ChatTemplateJinjaTest, FilterJoin) {
  ExpectRender(R"__({{ ['a', 'b'] | join(', ') }} {{ [1, 2] | join }} {{ users | join('|', attribute='name') }})__",
               R"__({"users": [{"name": "x"}, {"name": "y"}]})__",
               R"__(a, b 12 x|y)__");
}

TEST(ChatTemplateJinjaTest, FilterList) {
  ExpectRender(R"__({{ 'ab' | list }} {{ d | list }})__",
               R"__({"d": {"k": 1}})__",
               R"__(['a', 'b'] ['k'])__");
}

TEST(ChatTemplateJinjaTest, FilterCase) {
  ExpectRender(R"__({{ 'Hello World' | lower }} {{ 'abc' | upper }} {{ 'hello wORLD-x(y' | title }} {{ 'hELLO world' | capitalize }})__",
               R"__({})__",
               R"__(hello world ABC Hello World-X(Y Hello world)__");
}

TEST(ChatTemplateJinjaTest, FilterReplaceTrim) {
  ExpectRender(R"__({{ 'a-b-c' | replace('-', '+') }} {{ 'a-b-c' | replace('-', '', 1) }} [{{ '  x  ' | trim }}] {{ 'xxaxx' | trim('x') }})__",
               R"__({})__",
               R"__(a+b+c ab-c [x] a)__");
}

TEST(ChatTemplateJinjaTest, FilterDefault) {
  ExpectRender(R"__({{ missing | default('d') }} {{ '' | default('d') }} {{ '' | default('d', true) }} {{ none | d('n') }})__",
               R"__({})__",
               R"__(d  d None)__");
}

TEST(ChatTemplateJinjaTest, FilterItems) {
  ExpectRender(R"__({{ d | items | list }})__",
               R"__({"d": {"a": 1, "b": 2}})__",
               R"__([('a', 1), ('b', 2)])__");
}

TEST(ChatTemplateJinjaTest, FilterMap) {
  ExpectRender(R"__({{ users | map(attribute='name') | list }} {{ ['a', 'b'] | map('upper') | list }} {{ users | map(attribute='age', default=0) | list }})__",
               R"__({"users": [{"name": "x", "age": 3}, {"name": "y"}]})__",
               R"__(['x', 'y'] ['A', 'B'] [3, 0])__");
}

TEST(ChatTemplateJinjaTest, FilterSelectReject) {
  ExpectRender(R"__({{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('odd') | list }} {{ [0, 1, '', 'a'] | select | list }})__",
               R"__({})__",
               R"__([1, 3] [2, 4] [1, 'a'])__");
}

TEST(ChatTemplateJinjaTest, FilterSelectAttr) {
  ExpectRender(R"__({{ ms | selectattr('role', 'equalto', 'user') | map(attribute='c') | list }} {{ ms | rejectattr('role', 'eq', 'user') | list | length }} {{ ms | selectattr('c') | list | length }})__",
               R"__({"ms": [{"role": "user", "c": 1}, {"role": "assistant", "c": 0}, {"role": "user", "c": 3}]})__",
               R"__([1, 3] 1 2)__");
}

TEST(ChatTemplateJinjaTest, FilterSortUniqueReverse) {
  ExpectRender(R"__({{ [3, 1, 2] | sort }} {{ ['b', 'A', 'c'] | sort }} {{ ['b', 'A', 'c'] | sort(case_sensitive=true) }} {{ [3, 1, 2] | sort(reverse=true) }} {{ ['a', 'A', 'b', 'a'] | unique | list }} {{ [1, 2] | reverse | list }} {{ 'abc' | reverse }})__",
               R"__({})__",
               R"__([1, 2, 3] ['A', 'b', 'c'] ['A', 'b', 'c'] [3, 2, 1] ['a', 'b'] [2, 1] cba)__");
}

TEST(ChatTemplateJinjaTest, FilterSortByAttribute) {
  ExpectRender(R"__({{ users | sort(attribute='age') | map(attribute='n') | join }})__",
               R"__({"users": [{"n": "a", "age": 3}, {"n": "b", "age": 1}]})__",
               R"__(ba)__");
}

TEST(ChatTemplateJinjaTest, FilterDictsort) {
  ExpectRender(R"__({{ d | dictsort }} {{ d | dictsort(by='value', reverse=true) }})__",
               R"__({"d": {"b": 1, "a": 2, "C": 0}})__",
               R"__([('a', 2), ('b', 1), ('C', 0)] [('a', 2), ('b', 1), ('C', 0)])__");
}

TEST(ChatTemplateJinjaTest, FilterNumbers) {
  ExpectRender(R"__({{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int(7) }} {{ '1.5' | float }} {{ -3 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 2.1 | round(method='ceil') }} {{ [1, 2.5] | sum }} {{ [3, 1] | max }} {{ [3, 1] | min }})__",
               R"__({})__",
               R"__(42 4 7 1.5 3 2.57 2.0 3.0 3.5 3 1)__");
}

TEST(ChatTemplateJinjaTest, FilterIndent) {
  ExpectRender(R"__({{ 'a\nb\n\nc' | indent(2) }}|{{ 'a\nb' | indent(2, first=true) }}|{{ 'a\n\nb' | indent('> ', blank=true) }})__",
               R"__({})__",
               R"__(a
  b

  c|  a
  b|a
> 
> b)__");
}

TEST(ChatTemplateJinjaTest, FilterWordcountTruncate) {
  ExpectRender(R"__({{ 'hello big world' | wordcount }} {{ 'hello big wide world' | truncate(12) }} {{ 'hello big wide world' | truncate(12, true, '..', 0) }})__",
               R"__({})__",
               R"__(3 hello... hello big ..)__");
}

TEST(ChatTemplateJinjaTest, FilterBatch) {
  ExpectRender(R"__({{ [1, 2, 3, 4, 5] | batch(2) | list }} {{ [1, 2, 3] | batch(2, 0) | list }})__",
               R"__({})__",
               R"__([[1, 2], [3, 4], [5]] [[1, 2], [3, 0]])__");
}

TEST(ChatTemplateJinjaTest, FilterEscapeSafe) {
  ExpectRender(R"__({{ '<a href="x">&\'' | escape }} {{ '<b>' | safe }})__",
               R"__({})__",
               R"__(&lt;a href=&#34;x&#34;&gt;&amp;&#39; <b>)__");
}

TEST(ChatTemplateJinjaTest, FilterAttr) {
  ExpectRender(R"__({{ d | attr('items') is callable }})__",
               R"__({"d": {"k": 1}})__",
               R"__(True)__");
}

TEST(ChatTemplateJinjaTest, StrMethods) {
  ExpectRender(R"__({{ s.startswith('He') }} {{ s.endswith(('x', 'ld')) }} {{ s.split() }} {{ s.split('l') }} {{ s.split('l', 1) }} {{ s.rsplit('l', 1) }} {{ s.find('o') }} {{ s.rfind('o') }} {{ s.count('l') }} {{ s.replace('l', 'L', 2) }})__",
               R"__({"s": "Hello world"})__",
               R"__(True True ['Hello', 'world'] ['He', '', 'o wor', 'd'] ['He', 'lo world'] ['Hello wor', 'd'] 4 7 3 HeLLo world)__");
}

TEST(ChatTemplateJinjaTest, StrStripMethods) {
  ExpectRender(R"__([{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ t.strip('xy') }}][{{ t.rstrip('y') }}])__",
               R"__({"s": "\n\t hi \n", "t": "xyhixy"})__",
               R"__([hi][hi 
][
	 hi][hi][xyhix])__");
}

TEST(ChatTemplateJinjaTest, StrCaseMethods) {
  ExpectRender(R"__({{ s.lower() }} {{ s.upper() }} {{ s.title() }} {{ s.capitalize() }} {{ 'a1'.isalnum() }} {{ '12'.isdigit() }} {{ ' '.isspace() }})__",
               R"__({"s": "hELLO wOrld's"})__",
               R"__(hello world's HELLO WORLD'S Hello World'S Hello world's True True True)__");
}

TEST(ChatTemplateJinjaTest, StrSplitlinesJoin) {
  ExpectRender(R"__({{ 'a\nb\r\nc'.splitlines() }} {{ '-'.join(['a', 'b']) }})__",
               R"__({})__",
               R"__(['a', 'b', 'c'] a-b)__");
}

TEST(ChatTemplateJinjaTest, StrFormat) {
  ExpectRender(R"__({{ '{} and {}'.format('a', 1) }} {{ '{x}!'.format(x='y') }})__",
               R"__({})__",
               R"__(a and 1 y!)__");
}

TEST(ChatTemplateJinjaTest, DictMethods) {
  ExpectRender(R"__({{ d.keys() | list }} {{ d.values() | list }} {{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 5) }})__",
               R"__({"d": {"a": 1, "b": 2}})__",
               R"__(['a', 'b'] [1, 2] 1 None 5)__");
}

TEST(ChatTemplateJinjaTest, ListMethods) {
  ExpectRender(R"__({{ l.index(2) }} {{ l.count(1) }})__",
               R"__({"l": [1, 2, 1]})__",
               R"__(1 2)__");
}

TEST(ChatTemplateJinjaTest, RangeGlobal) {
  ExpectRender(R"__({{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(3, 0, -1) | list }})__",
               R"__({})__",
               R"__([0, 1, 2] [1, 3, 5] [3, 2, 1])__");
}

TEST(ChatTemplateJinjaTest, DictGlobal) {
  ExpectRender(R"__({{ dict(a=1, b='x') }})__",
               R"__({})__",
               R"__({'a': 1, 'b': 'x'})__");
}

TEST(ChatTemplateJinjaTest, LoopVariableInsideMacroIsOwnLoop) {
  ExpectRender(R"__({% macro m() %}{% for y in [1] %}{{ loop.index }}{% endfor %}{% endmacro %}{% for x in [1, 2] %}{{ m() }}{{ loop.index }}{% endfor %})__",
               R"__({})__",
               R"__(1112)__");
}

// python: "No filter named 'nosuchfilter'."
TEST(ChatTemplateJinjaTest, UnknownFilterFailsAtParse) {
  ExpectError(R"__(line 1
{{ x | nosuchfilter }})__",
              R"__({})__",
              R"__(No filter named 'nosuchfilter'.)__", 2, 8);
}

// python: "No test named 'nosuchtest' found."
// Inside an if, Jinja defers the unknown-test error to when the test runs.
TEST(ChatTemplateJinjaTest, UnknownTestInIfFailsWhenEvaluated) {
  ExpectError(R"__({% if x is nosuchtest %}{% endif %})__",
              R"__({})__",
              R"__(No test named 'nosuchtest' found.)__", 1, 12);
  ExpectRender(R"__({% if false %}{{ x is nosuchtest }}{% endif %}ok)__", R"__({})__", "ok");
}

// python: "No test named 'nosuchtest'." (TemplateAssertionError at compile time)
TEST(ChatTemplateJinjaTest, UnknownTestOutsideIfFailsAtParse) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("{{ x is nosuchtest }}");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("No test named 'nosuchtest'."));
}

// python: 'no loader for this environment specified'
TEST(ChatTemplateJinjaTest, IncludeFailsWithoutLoader) {
  ExpectError(R"__(ok
  {% include 'x' %})__",
              R"__({})__",
              R"__(no loader for this environment specified)__", 2, 6);
}

// python: "Encountered unknown tag 'nosuchtag'."
TEST(ChatTemplateJinjaTest, UnknownTagFails) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("{% nosuchtag %}");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("unknown or unsupported tag"));
}

// python: "Unexpected end of template. Jinja was looking for the following tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'."
TEST(ChatTemplateJinjaTest, UnclosedBlockFails) {
  ExpectError(R"__({% if true %}never closed)__",
              R"__({})__",
              R"__(unexpected end of template; expected 'endif')__", 1, 26);
}

// python: "Encountered unknown tag 'endfor'."
TEST(ChatTemplateJinjaTest, UnexpectedEndTagFails) {
  ExpectError(R"__({% endfor %})__",
              R"__({})__",
              R"__(unexpected 'endfor' tag)__", 1, 4);
}

// python: 'unexpected char "\'" at 3'
TEST(ChatTemplateJinjaTest, UnterminatedStringFails) {
  ExpectError(R"__({{ 'abc }})__",
              R"__({})__",
              R"__(unterminated string literal)__", 1, 4);
}

// python: "'missing' is undefined"
TEST(ChatTemplateJinjaTest, AttributeOfUndefinedFails) {
  ExpectError(R"__(a
{{ missing.attr }})__",
              R"__({})__",
              R"__('missing' is undefined)__", 2, 11);
}

// python: "'None' has no attribute 'strip'"
TEST(ChatTemplateJinjaTest, AttributeOfNoneFails) {
  ExpectError(R"__({{ x.strip() }})__",
              R"__({"x": null})__",
              R"__('None' has no attribute 'strip')__", 1, 11);
}

// python: 'can only concatenate str (not "int") to str'
TEST(ChatTemplateJinjaTest, AddStrAndIntFails) {
  ExpectError(R"__({{ 'a' + 1 }})__",
              R"__({})__",
              R"__(can only concatenate str (not "int") to str)__", 1, 8);
}

// python: "'missing' is undefined"
TEST(ChatTemplateJinjaTest, AddUndefinedFails) {
  ExpectError(R"__({{ missing + 1 }})__",
              R"__({})__",
              R"__('missing' is undefined)__", 1, 12);
}

// python: "'<' not supported between instances of 'str' and 'int'"
TEST(ChatTemplateJinjaTest, CompareStrIntFails) {
  ExpectError(R"__({{ 'a' < 1 }})__",
              R"__({})__",
              R"__('<' not supported between instances of 'str' and 'int')__", 1, 8);
}

// python: "'NoneType' object is not iterable"
TEST(ChatTemplateJinjaTest, IterateNoneFails) {
  ExpectError(R"__({% for x in none %}{% endfor %})__",
              R"__({})__",
              R"__('NoneType' object is not iterable)__", 1, 13);
}

// python: "argument of type 'NoneType' is not iterable"
TEST(ChatTemplateJinjaTest, InNoneFails) {
  ExpectError(R"__({{ 'a' in x }})__",
              R"__({"x": null})__",
              R"__(argument of type 'NoneType' is not iterable)__", 1, 8);
}

// python: "access to attribute 'append' of 'list' object is unsafe."
TEST(ChatTemplateJinjaTest, ListAppendIsUnsafe) {
  ExpectError(R"__({% set l = [] %}{{ l.append(1) }})__",
              R"__({})__",
              R"__(access to attribute 'append' of 'list' object is unsafe.)__", 1, 28);
}

// python: "access to attribute 'update' of 'dict' object is unsafe."
TEST(ChatTemplateJinjaTest, DictUpdateIsUnsafe) {
  ExpectError(R"__({{ d.update({}) }})__",
              R"__({"d": {}})__",
              R"__(access to attribute 'update' of 'dict' object is unsafe.)__", 1, 12);
}

// python: 'cannot assign attribute on non-namespace object'
TEST(ChatTemplateJinjaTest, SetAttributeOnNonNamespaceFails) {
  ExpectError(R"__({% set d = {} %}{% set d.x = 1 %})__",
              R"__({})__",
              R"__(cannot assign attribute on non-namespace object)__", 1, 20);
}

// python: 'Bad role: robot'
TEST(ChatTemplateJinjaTest, RaiseExceptionFails) {
  ExpectError(R"__(x{{ raise_exception('Bad role: ' ~ r) }})__",
              R"__({"r": "robot"})__",
              R"__(raise_exception: Bad role: robot)__", 1, 20);
}

// python: 'integer division or modulo by zero'
TEST(ChatTemplateJinjaTest, DivisionByZeroFails) {
  ExpectError(R"__({{ 1 // 0 }})__",
              R"__({})__",
              R"__(integer division or modulo by zero)__", 1, 6);
}

// python: "'str' object is not callable"
TEST(ChatTemplateJinjaTest, CallingNonCallableFails) {
  ExpectError(R"__({{ x() }})__",
              R"__({"x": "s"})__",
              R"__('str' object is not callable)__", 1, 5);
}

// python: 'Object of type Undefined is not JSON serializable'
TEST(ChatTemplateJinjaTest, TojsonOfUndefinedFails) {
  ExpectError(R"__({{ missing | tojson }})__",
              R"__({})__",
              R"__(Object of type Undefined is not JSON serializable)__", 1, 14);
}

// python: 'too many values to unpack (expected 2)'
TEST(ChatTemplateJinjaTest, UnpackMismatchFails) {
  ExpectError(R"__({% for a, b in [[1, 2, 3]] %}{% endfor %})__",
              R"__({})__",
              R"__(too many values to unpack (expected 2))__", 1, 4);
}

// python: "'break' outside loop (<template>, line 11)"
TEST(ChatTemplateJinjaTest, BreakOutsideLoopFails) {
  ExpectError(R"__({% break %})__",
              R"__({})__",
              R"__('break' outside of a for loop)__", 1, 4);
}

TEST(ChatTemplateJinjaTest, PercentFormatting) {
  ExpectRender(R"__({{ '%s and %r' % ('a', 'b') }} {{ '%d%%' % 42 }} {{ '%05.2f|%-4s|%4s|%x' % (3.14159, 'ab', 'cd', 255) }} {{ '%(a)s=%(b)d' % {'a': 'k', 'b': 7} }} {{ '%s' % none }} {{ '%.2s' % 'héllo' }})__",
               R"__({})__",
               R"__(a and 'b' 42% 03.14|ab  |  cd|ff k=7 None hé)__");
}

TEST(ChatTemplateJinjaTest, FilterFormat) {
  ExpectRender(R"__({{ '%s, %s!' | format('Hello', 'you') }} {{ '%(x)s' | format(x=1) }})__",
               R"__({})__",
               R"__(Hello, you! 1)__");
}

TEST(ChatTemplateJinjaTest, LoopObjectInNestedLoopIsInner) {
  ExpectRender(R"__({% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{% endfor %}{{ loop.index }};{% endfor %})__",
               R"__({})__",
               R"__(121;122;)__");
}

TEST(ChatTemplateJinjaTest, NamespaceFromDict) {
  ExpectRender(R"__({% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }})__",
               R"__({})__",
               R"__(12)__");
}

TEST(ChatTemplateJinjaTest, IsNotAndChains) {
  ExpectRender(R"__({{ x is not string and x is not mapping and x is iterable }})__",
               R"__({"x": [1]})__",
               R"__(True)__");
}

TEST(ChatTemplateJinjaTest, NegativeStepSliceOfString) {
  ExpectRender(R"__({{ 'abcdef'[-2::-2] }} {{ 'abc'[5:] }}|{{ [1, 2, 3][-10:2] }})__",
               R"__({})__",
               R"__(eca |[1, 2])__");
}

TEST(ChatTemplateJinjaTest, UnicodeJsonEnsureAscii) {
  ExpectRender(R"__({{ s | tojson(ensure_ascii=true) }} {{ s | tojson }})__",
               R"__({"s": "é😀\u0001"})__",
               R"__("\u00e9\ud83d\ude00\u0001\u007f" "é😀\u0001")__");
}

TEST(ChatTemplateJinjaTest, UnicodeCaseMapping) {
  // Python maps every script (and ß -> SS, final sigma); needs the ICU build (like NFC).
  if (!Tokenizer::AppliesNfc()) GTEST_SKIP() << "built without ICU";
  ExpectRender("{{ x.lower() }}|{{ x.upper() }}|{{ x|lower }}|{{ x|upper }}",
               R"__({"x": "ÀÉÎ Straße ΣΑΣ"})__",
               "àéî straße σας|ÀÉÎ STRASSE ΣΑΣ|àéî straße σας|ÀÉÎ STRASSE ΣΑΣ");
}

TEST(ChatTemplateJinjaTest, MacroExtraPositionalArgumentFails) {
  ExpectError("{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}", "{}",
              "macro 'm' takes not more than 1 argument(s)", 1, 42);
}

TEST(ChatTemplateJinjaTest, MacroUnknownKeywordArgumentFails) {
  ExpectError("{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, x=2) }}", "{}",
              "macro 'm' takes no keyword argument 'x'", 1, 42);
}

TEST(ChatTemplateJinjaTest, MacroMissingArgumentIsUndefined) {
  ExpectRender("{% macro m(a) %}[{{ a }}]{{ a is defined }}{% endmacro %}{{ m() }}", "{}",
               "[]False");
}

TEST(ChatTemplateJinjaTest, GenerationBlockRendersItsBody) {
  // Hugging Face's AssistantTracker extension: {% generation %} marks assistant text.
  ExpectRender("a{% generation %}gen {{ x }}{% endgeneration %}b", R"({"x": 1})", "agen 1b");
}

TEST(ChatTemplateJinjaTest, RaiseExceptionIsFailedPrecondition) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("{{ raise_exception('no') }}");
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(t->Render(Json::object()).status()));
}

TEST(ChatTemplateJinjaTest, StrftimeNowFormatsToday) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("{{ strftime_now('%Y') }}");
  ASSERT_TRUE(t.ok());
  absl::StatusOr<std::string> out = t->Render(Json::object());
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->size(), 4u);
  EXPECT_GE(std::stoi(*out), 2024);
}

TEST(ChatTemplateTest, ApplyPassesHfVariables) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(
      "{{ bos_token }}|{{ tools is none }}|{{ documents is none }}|{{ add_generation_prompt }}|"
      "{{ messages[0].content }}|{{ enable_thinking }}|{{ eos_token is defined }}");
  ASSERT_TRUE(t.ok());
  ChatTemplateInputs in;
  in.messages = Json::parse(R"([{"role": "user", "content": "hi"}])");
  in.add_generation_prompt = true;
  in.bos_token = "<s>";
  in.extra_kwargs = Json::parse(R"({"enable_thinking": false})");
  absl::StatusOr<std::string> out = ApplyChatTemplate(*t, in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<s>|True|True|True|hi|False|False");
}

TEST(ChatTemplateTest, DeeplyNestedInputIsRefused) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("{{ messages | length }}");
  ASSERT_TRUE(t.ok());
  Json deep = "leaf";
  for (int i = 0; i < 1000; ++i) deep = Json::array({deep});
  absl::StatusOr<std::string> out = t->Render({{"messages", deep}});
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("nests deeper than"));
}

TEST(ChatTemplateTest, UnboundedMacroRecursionFails) {
  ExpectError("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "{}",
              "recursed deeper than", 1, 21);
}

TEST(ChatTemplateTest, RenderIsThreadSafe) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
      "{{ m.content }}{% endfor %}{{ ns.n }}");
  ASSERT_TRUE(t.ok());
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      Json ctx = {{"messages", Json::array()}};
      for (int k = 0; k <= i; ++k) ctx["messages"].push_back({{"content", std::to_string(k)}});
      std::string want;
      for (int k = 0; k <= i; ++k) want += std::to_string(k);
      want += std::to_string(i + 1);
      for (int r = 0; r < 200; ++r) {
        absl::StatusOr<std::string> out = t->Render(ctx);
        if (out.ok() && *out == want) ++ok[i];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(ok[i], 200) << i;
}

TEST(ChatTemplateTest, LoadsNamedTemplatesAndAddedTokens) {
  const std::string dir = testing::MakeTempDir("chat_template");
  {
    std::ofstream f(dir + "/tokenizer_config.json");
    f << R"({"bos_token": {"__type": "AddedToken", "content": "<B>"}, "eos_token": "<E>",
            "chat_template": [{"name": "default", "template": "D{{ bos_token }}{{ eos_token }}"},
                              {"name": "tool_use", "template": "T{{ tools | length }}"}]})";
  }
  absl::StatusOr<LoadedChatTemplate> loaded = LoadChatTemplate(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->bos_token.value_or(""), "<B>");
  EXPECT_EQ(loaded->eos_token.value_or(""), "<E>");
  ChatTemplateInputs in;
  in.bos_token = loaded->bos_token;
  in.eos_token = loaded->eos_token;
  absl::StatusOr<std::string> out = ApplyChatTemplate(*loaded->Select(false), in);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "D<B><E>");
  in.tools = Json::parse(R"([{"type": "function"}])");
  out = ApplyChatTemplate(*loaded->Select(true), in);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "T1");
}

TEST(ChatTemplateTest, ChatTemplateJinjaFileOverridesConfig) {
  const std::string dir = testing::MakeTempDir("chat_template");
  {
    std::ofstream f(dir + "/tokenizer_config.json");
    f << R"({"chat_template": "config"})";
  }
  {
    std::ofstream f(dir + "/chat_template.jinja");
    f << "file\n";
  }
  absl::StatusOr<LoadedChatTemplate> loaded = LoadChatTemplate(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  absl::StatusOr<std::string> out = ApplyChatTemplate(*loaded->Select(false), {});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "file");
}

TEST(ChatTemplateTest, LoadReportsTemplateErrorsWithFile) {
  const std::string dir = testing::MakeTempDir("chat_template");
  {
    std::ofstream f(dir + "/tokenizer_config.json");
    f << R"({"chat_template": "{% if %}"})";
  }
  absl::StatusOr<LoadedChatTemplate> loaded = LoadChatTemplate(dir);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("tokenizer_config.json"));
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("template line 1, column 7"));
}

// ---- Python semantics that are easy to get subtly wrong (tests/coordinator/
// jinja_conformance_test.py compares hundreds more against jinja2) ----

TEST(ChatTemplateJinjaTest, ChainedComparisonsAreConjunctions) {
  ExpectRender("{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 0 < x <= 5 }}", R"({"x": 5})",
               "True False True");
}

TEST(ChatTemplateJinjaTest, GeneratorFilterResultIsTruthyEvenWhenEmpty) {
  ExpectRender("{% if xs|select('none') %}truthy{% endif %} {{ xs|select('none')|list|length }}",
               R"({"xs": [1, 2]})", "truthy 0");
}

TEST(ChatTemplateJinjaTest, GeneratorIsExhaustedAfterOneIteration) {
  ExpectRender("{% set g = xs|map('string') %}{{ g|join(',') }}|{{ g|join(',') }}|",
               R"({"xs": [1, 2]})", "1,2||");
}

TEST(ChatTemplateJinjaTest, GeneratorHasNoLength) {
  ExpectError("{{ xs|select|length }}", R"({"xs": [1]})",
              "object of type 'generator' has no len()", 1, 14);
}

// python: select over an int renders "<generator ...>"; the TypeError comes on iteration.
TEST(ChatTemplateJinjaTest, GeneratorFilterFailsOnlyWhenConsumed) {
  ExpectRender("{% set g = 1|select %}ok", "{}", "ok");
  ExpectError("{{ (1|select)|list }}", "{}", "'int' object is not iterable", 1, 15);
}

TEST(ChatTemplateJinjaTest, EscapeReturnsMarkupThatEscapesWhatIsAdded) {
  ExpectRender("{{ ('<b>'|e) + '<i>' }} {{ '<b>'|e|e }} {{ ('<b>'|e) ~ '<i>' }}", "{}",
               "&lt;b&gt;&lt;i&gt; &lt;b&gt; &lt;b&gt;<i>");
}

TEST(ChatTemplateJinjaTest, ListPopIsAllowedAndMutates) {
  ExpectRender("{% set last = xs.pop() %}{{ last }} {{ xs }}", R"({"xs": [1, 2, 3]})",
               "3 [1, 2]");
}

TEST(ChatTemplateJinjaTest, DictViewsAndRangePrintLikePython) {
  ExpectRender("{{ d.items() }} {{ d.keys()|list }} {{ range(2, 5) }}", R"({"d": {"a": 1}})",
               "dict_items([('a', 1)]) ['a'] range(2, 5)");
}

TEST(ChatTemplateJinjaTest, StrFormatSpecs) {
  ExpectRender("{{ '{:>6.2f}|{:^7}|{:,}|{!r}'.format(3.14159, 'mid', 1234567, 'q') }}", "{}",
               "  3.14|  mid  |1,234,567|'q'");
}

TEST(ChatTemplateJinjaTest, TextFilters) {
  ExpectRender("{{ 'Ab'|center(6) }}|{{ 'a b c d e'|wordwrap(3) }}|{{ '<p>x  y</p>'|striptags }}",
               "{}", "  Ab  |a b\nc d\ne|x y");
}

TEST(ChatTemplateJinjaTest, GroupbySortsAndGroups) {
  ExpectRender(
      "{% for k, g in xs|groupby('t') %}{{ k }}={{ g|map(attribute='n')|join(',') }};{% endfor %}",
      R"({"xs": [{"t": "b", "n": 1}, {"t": "a", "n": 2}, {"t": "b", "n": 3}]})", "a=2;b=1,3;");
}

TEST(ChatTemplateJinjaTest, ErrorsCarryTheirJinjaKind) {
  auto kind_of = [](const std::string& source) {
    absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source);
    if (!t.ok()) return jinja::ErrorKindOf(t.status());
    return jinja::ErrorKindOf(t->Render(Json::object()).status());
  };
  EXPECT_EQ(kind_of("{{ missing.x }}"), jinja::ErrorKind::kUndefined);
  EXPECT_EQ(kind_of("{{ 1 + 'a' }}"), jinja::ErrorKind::kType);
  EXPECT_EQ(kind_of("{{ 1 / 0 }}"), jinja::ErrorKind::kValue);
  EXPECT_EQ(kind_of("{{ [].append(1) }}"), jinja::ErrorKind::kSecurity);
  EXPECT_EQ(kind_of("{{ raise_exception('no') }}"), jinja::ErrorKind::kRaised);
  EXPECT_EQ(kind_of("{% if %}"), jinja::ErrorKind::kSyntax);
  EXPECT_EQ(kind_of("{{ range(200000)|length }}"), jinja::ErrorKind::kValue);
}

TEST(ChatTemplateTest, RealTemplatesParse) {
  for (const char* name : {"GLM-4.6.jinja", "Kimi-K2-Thinking.jinja", "openai-gpt-oss-120b.jinja",
                           "Mistral-Small-3.2-24B-Instruct-2506.jinja",
                           "deepseek-ai-DeepSeek-V3.1.jinja", "Qwen-Qwen3-0.6B.jinja"}) {
    std::ifstream f(testing::TestDataDir() + "/chat_templates/" + name);
    ASSERT_TRUE(f.good()) << name;
    std::string source((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_TRUE(ChatTemplate::Parse(source).ok()) << name;
  }
}

}  // namespace
}  // namespace tessera
