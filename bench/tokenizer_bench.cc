// Tokenizer encode throughput: Tessera's C++ tokenizer vs Hugging Face `tokenizers` (the Python
// package, Rust inside), single thread, measured in the same run on the same text.
//
//   build/bench/tokenizer_bench [--tokenizer DIR] [--mb 1] [--python PY] [--repeats 3]
//
// Text: ~1 MB of English and ~1 MB of Chinese built deterministically from the seed sentences
// below (an LCG picks sentences, numbers and line breaks). Two modes, both sides alike:
// 'one' encodes each text as one big string (tokenizers: Tokenizer.encode(text,
// add_special_tokens=False)); 'lines' splits it after every newline (~1 KB lines) and encodes
// the lines (tokenizers: encode_batch). tokenizers runs with RAYON_NUM_THREADS=1 and
// TOKENIZERS_PARALLELISM=false. The first pass is reported separately (cold piece caches), then
// the best of --repeats. The id sequences must be identical (the bench fails otherwise).
// Prints MB/s for both and the ratio Tessera / tokenizers.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "coordinator/text/tokenizer.h"
#include "kernels/base/flags.h"

namespace tessera {
namespace {

const char* const kEnglish[] = {
    "The quick brown fox jumps over the lazy dog.",
    "In 2023, the committee approved a budget of $4.5 million for the new library.",
    "She didn't know whether they'd arrive before the storm, so we waited.",
    "Machine learning models are trained on large datasets and evaluated on held-out data.",
    "Please read the instructions carefully before assembling the furniture.",
    "The mitochondria is often described as the powerhouse of the cell.",
    "He asked, \"Where are you going?\" and she replied, \"To the market.\"",
    "Our quarterly revenue grew by 12% compared with the same period last year.",
    "To install the package, run `pip install example` and restart your shell.",
    "The conference will take place in Geneva from March 3rd to March 7th.",
    "Although the results were promising, further experiments are needed.",
    "Large language models predict the next token given all previous tokens.",
    "It's important to drink water regularly, especially during hot weather.",
    "The train departs at 7:45 a.m. and arrives in Boston around noon.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "If you have any questions, don't hesitate to contact our support team.",
    "The museum's collection includes paintings from the 17th and 18th centuries.",
    "Error: could not open file 'config.yaml' (permission denied).",
    "We'll need approximately 250 grams of flour, 2 eggs, and a pinch of salt.",
    "The distributed system replicates every write to three independent nodes.",
};

const char* const kChinese[] = {
    "今天天气很好，我们一起去公园散步吧。",
    "人工智能正在改变我们的生活方式和工作方式。",
    "这本书讲述了一个关于勇气和友谊的感人故事。",
    "请在会议开始前十分钟到达会议室。",
    "我国经济在过去一年中保持了稳定增长，国内生产总值增长百分之五点二。",
    "研究人员发现，适量运动有助于改善睡眠质量。",
    "北京是中国的首都，也是一座历史悠久的文化名城。",
    "他每天早上七点起床，然后骑自行车去学校。",
    "大型语言模型通过预测下一个词来生成文本。",
    "这家餐厅的招牌菜是红烧肉和清蒸鱼，味道非常好。",
    "为了保护环境，我们应该减少使用一次性塑料制品。",
    "新的地铁线路预计将于明年年底正式开通运营。",
    "数据中心的能耗问题越来越受到社会各界的关注。",
    "孩子们在操场上快乐地玩耍，老师在一旁看着他们。",
    "如果你有任何问题，请随时与我们的客服团队联系。",
};

// ~`bytes` of text from `sentences`, deterministic.
template <size_t N>
std::string MakeText(const char* const (&sentences)[N], size_t bytes, const char* space) {
  std::string out;
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&state] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(state >> 33);
  };
  while (out.size() < bytes) {
    out += sentences[next() % N];
    const uint32_t r = next() % 16;
    if (r == 0) {
      out += "\n\n";
    } else if (r == 1) {
      absl::StrAppend(&out, space, next() % 100000, space);
    } else {
      out += space;
    }
  }
  return out;
}

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int Main(int argc, char** argv) {
  FlagParser flags("tokenizer_bench", "tokenizer encode throughput vs Hugging Face tokenizers");
  std::string dir = std::string(TESSERA_BENCH_TESTDATA) + "/tokenizers/qwen3";
  std::string python = std::string(std::getenv("HOME") ? std::getenv("HOME") : "") +
                       "/.cache/tessera/venv/bin/python3";
  double mb = 1.0;
  int repeats = 3;
  flags.AddString("tokenizer", &dir, "directory holding tokenizer.json");
  flags.AddString("python", &python, "python with the `tokenizers` package");
  flags.AddDouble("mb", &mb, "megabytes of text per language");
  flags.AddInt("repeats", &repeats, "timed passes after the first (best is reported)");
  const absl::Status st = flags.Parse(argc, argv);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
    return 2;
  }
  auto tok = LoadTokenizer(dir);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tok.status().message()).c_str());
    return 1;
  }
  const size_t bytes = static_cast<size_t>(mb * 1e6);
  struct Lang {
    const char* name;
    std::string text;
  };
  std::vector<Lang> langs = {{"english", MakeText(kEnglish, bytes, " ")},
                             {"chinese", MakeText(kChinese, bytes, "")}};
  std::printf("tokenizer %s, one thread, best of %d after a first (cold) pass; 'one': the text "
              "as one string (tokenizers: encode), 'lines': split after each newline "
              "(tokenizers: encode_batch)\n", dir.c_str(), repeats);
  int failures = 0;
  for (const Lang& lang : langs) {
    std::vector<absl::string_view> lines;
    for (size_t pos = 0; pos < lang.text.size();) {
      size_t nl = lang.text.find('\n', pos);
      nl = nl == std::string::npos ? lang.text.size() : nl + 1;
      lines.push_back(absl::string_view(lang.text).substr(pos, nl - pos));
      pos = nl;
    }
    for (const char* mode : {"one", "lines"}) {
      const bool per_line = mode[0] == 'l';
      // Tessera.
      std::vector<int32_t> ids;
      auto encode = [&] {
        ids.clear();
        if (!per_line) {
          ids = (*tok)->Encode(lang.text, /*allow_special=*/false);
          return;
        }
        for (absl::string_view line : lines) {
          const std::vector<int32_t> part = (*tok)->Encode(line, false);
          ids.insert(ids.end(), part.begin(), part.end());
        }
      };
      auto t0 = std::chrono::steady_clock::now();
      encode();
      const double first = Seconds(t0, std::chrono::steady_clock::now());
      double best = 1e30;
      for (int r = 0; r < repeats; ++r) {
        t0 = std::chrono::steady_clock::now();
        encode();
        best = std::min(best, Seconds(t0, std::chrono::steady_clock::now()));
      }
      // tokenizers, same text, same measurement, in a child process.
      const std::string text_path = absl::StrCat("/tmp/tokenizer_bench_", getpid(), ".txt");
      const std::string ids_path = text_path + ".ids";
      std::ofstream(text_path, std::ios::binary) << lang.text;
      const std::string call =
          per_line ? "[i for e in tok.encode_batch(lines,add_special_tokens=False) for i in e.ids]"
                   : "tok.encode(text,add_special_tokens=False).ids";
      const std::string script = absl::StrCat(
          "import os,time,tokenizers\n"
          "tok=tokenizers.Tokenizer.from_file('", dir, "/tokenizer.json')\n"
          "text=open('", text_path, "',encoding='utf-8',newline='').read()\n"
          "lines=[l+'\\n' for l in text.split('\\n')]\n"
          "lines[-1]=lines[-1][:-1]\n"
          "lines=[l for l in lines if l]\n"
          "t=time.perf_counter();ids=", call, "\n"
          "first=time.perf_counter()-t;best=1e30\n"
          "for _ in range(", repeats, "):\n"
          "  t=time.perf_counter();ids=", call, "\n"
          "  best=min(best,time.perf_counter()-t)\n"
          "open('", ids_path, "','w').write(' '.join(map(str,ids)))\n"
          "print(first,best)\n");
      const std::string script_path = text_path + ".py";
      std::ofstream(script_path) << script;
      const std::string cmd = absl::StrCat("RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false '",
                                           python, "' ", script_path);
      FILE* p = popen(cmd.c_str(), "r");
      double hf_first = 0, hf_best = 0;
      const bool ran = p != nullptr && std::fscanf(p, "%lf %lf", &hf_first, &hf_best) == 2;
      if (p != nullptr) pclose(p);
      std::ifstream ids_in(ids_path);
      std::stringstream ref;
      ref << ids_in.rdbuf();
      std::string mine;
      for (size_t i = 0; i < ids.size(); ++i) absl::StrAppend(&mine, i ? " " : "", ids[i]);
      const bool same = ran && ref.str() == mine;
      std::remove(text_path.c_str());
      std::remove(ids_path.c_str());
      std::remove(script_path.c_str());
      const double size_mb = lang.text.size() / 1e6;
      std::printf("%-8s %-5s %.2f MB %7zu tokens | tessera %6.2f MB/s (first %6.2f) | "
                  "tokenizers ", lang.name, mode, size_mb, ids.size(), size_mb / best,
                  size_mb / first);
      if (ran) {
        std::printf("%6.2f MB/s (first %6.2f) | ratio %.2fx | ids %s\n", size_mb / hf_best,
                    size_mb / hf_first, hf_best / best, same ? "identical" : "DIFFER");
      } else {
        std::printf("did not run (%s)\n", cmd.c_str());
      }
      std::fflush(stdout);
      failures += !same;
    }
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
